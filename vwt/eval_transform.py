"""timm's and open_clip's eval preprocessing (a torchvision transform), recorded and re-run without either.

timm (``resolve_model_data_config`` + ``create_transform``) and open_clip (``create_model_and_transforms``)
preprocess with torchvision: ``Resize`` (shortest side, or a fixed height and width), ``CenterCrop``,
``ToTensor``, ``Normalize``. A Hugging Face processor is not the same: its center crop rounds the offset
down where torchvision rounds it to nearest, a pixel apart on many photos. :class:`EvalTransform` is
that recipe as data: read off the library's transform object (:func:`eval_transform`), saved in a
vocabulary's ``preprocess`` (``processor_type`` ``"EvalTransform"``, the model in ``source``), and run
with Pillow and torch exactly as torchvision runs it on PIL images, so a tokenizer needs neither library.

Names: ``timm:<model>`` (e.g. ``timm:vit_base_patch16_224``) and ``open_clip:<model>`` (``open_clip:ViT-B-16``);
the model is built without weights (``pretrained=False``/``None`` on the ``meta`` device): nothing is downloaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["EVAL_TRANSFORM_TYPE", "EvalTransform", "eval_transform", "is_eval_transform_name"]

EVAL_TRANSFORM_TYPE = "EvalTransform"
"""The ``image_processor_type`` a recorded :class:`EvalTransform` has in a vocabulary's config."""
_PREFIXES = ("timm:", "open_clip:")
_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
             "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING}
# Steps that only make the image RGB (done before any processor by vwt.preprocess.to_rgb_image).
_RGB_STEPS = ("MaybeConvertMode", "_convert_to_rgb")


def is_eval_transform_name(name: Any) -> bool:
    """Whether ``name`` names a timm or open_clip model's preprocessing (``timm:...``, ``open_clip:...``)."""
    return isinstance(name, str) and name.startswith(_PREFIXES)


class EvalTransform:
    """Resize, center crop, scale to [0, 1] and normalize, exactly as torchvision does on PIL images.

    Takes what the Hugging Face image processors take (``processor(images=[...], return_tensors="pt")``)
    and records itself with ``to_dict`` / ``from_dict``, so vocabularies and tokenizers treat it as one.

    Args:
        size: the resize: ``{"shortest_edge": s}`` (the long side scaled and truncated, as torchvision's
            ``Resize(s)``) or ``{"height": h, "width": w}``.
        crop_size: ``{"height": h, "width": w}`` of the center crop, or None for none.
        resample: the interpolation's name (``"bicubic"``, ``"bilinear"``, ...).
        image_mean, image_std: per-channel normalization after scaling to [0, 1].
        source: the model the recipe was read from (``timm:...`` or ``open_clip:...``), for the record.
    """

    def __init__(self, size: dict[str, int], crop_size: dict[str, int] | None, resample: str,
                 image_mean: Sequence[float], image_std: Sequence[float], source: str = "") -> None:
        if resample not in _RESAMPLE:
            raise ValueError(f"unsupported interpolation {resample!r}; one of {', '.join(_RESAMPLE)}")
        if not (set(size) == {"shortest_edge"} or set(size) == {"height", "width"}):
            raise ValueError(f"size must be {{'shortest_edge': s}} or {{'height': h, 'width': w}}, got {size}")
        self.size, self.crop_size, self.resample = dict(size), None if crop_size is None else dict(crop_size), resample
        self.image_mean, self.image_std = [float(v) for v in image_mean], [float(v) for v in image_std]
        self.source = source

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON, in the keys of a Hugging Face processor's dict (read by ``vwt.config``)."""
        return {"image_processor_type": EVAL_TRANSFORM_TYPE, "source": self.source, "do_resize": True,
                "size": self.size, "resample": self.resample, "do_center_crop": self.crop_size is not None,
                "crop_size": self.crop_size, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": self.image_mean, "image_std": self.image_std}

    @classmethod
    def from_dict(cls, recipe: dict[str, Any]) -> EvalTransform:
        """The inverse of :meth:`to_dict`."""
        crop = recipe.get("crop_size") if recipe.get("do_center_crop") else None
        return cls(recipe["size"], crop, recipe["resample"], recipe["image_mean"], recipe["image_std"],
                   recipe.get("source", ""))

    def __repr__(self) -> str:
        return f"EvalTransform({self.to_dict()})"

    def _one(self, image: Image.Image) -> torch.Tensor:
        """``[C, H, W]`` float32 from one RGB PIL image (torchvision's Resize, CenterCrop, ToTensor, Normalize)."""
        w, h = image.size
        if "shortest_edge" in self.size:
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.size["shortest_edge"], int(self.size["shortest_edge"] * long / short)
            new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        else:
            new_w, new_h = self.size["width"], self.size["height"]
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), _RESAMPLE[self.resample])
        if self.crop_size is not None:
            ch, cw = self.crop_size["height"], self.crop_size["width"]
            if ch > new_h or cw > new_w:
                raise ValueError(f"the center crop {ch}x{cw} is larger than the resized image {new_h}x{new_w}")
            top, left = int(round((new_h - ch) / 2.0)), int(round((new_w - cw) / 2.0))
            image = image.crop((left, top, left + cw, top + ch))
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()
        mean = torch.tensor(self.image_mean).view(-1, 1, 1)
        std = torch.tensor(self.image_std).view(-1, 1, 1)
        return pixels.to(torch.float32).div(255).sub(mean).div(std)

    def __call__(self, images: Sequence[Image.Image], return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        """``{"pixel_values": [B, C, H, W]}`` from RGB PIL images (as the Hugging Face processors answer)."""
        if return_tensors != "pt":
            raise ValueError(f"EvalTransform returns torch tensors only, got return_tensors={return_tensors!r}")
        return {"pixel_values": torch.stack([self._one(image) for image in images])}


def _from_torchvision(transform: Any, source: str) -> EvalTransform:
    """Read the recipe off a torchvision ``Compose``; anything it does not know is a clear error."""
    size = crop = resample = mean = std = None
    for step in getattr(transform, "transforms", [transform]):
        name = getattr(step, "__name__", type(step).__name__)
        if name == "Resize":
            if getattr(step, "max_size", None) is not None:
                raise ValueError(f"{source}: Resize with max_size is not supported")
            value = step.size if isinstance(step.size, int) else tuple(step.size)
            if isinstance(value, int) or len(value) == 1:
                size = {"shortest_edge": int(value if isinstance(value, int) else value[0])}
            else:
                size = {"height": int(value[0]), "width": int(value[1])}
            resample = step.interpolation.value
        elif name == "CenterCrop":
            crop = {"height": int(step.size[0]), "width": int(step.size[1])}
        elif name == "Normalize":
            mean, std = [float(v) for v in step.mean], [float(v) for v in step.std]
        elif name not in ("ToTensor", "MaybeToTensor", *_RGB_STEPS):
            raise ValueError(f"{source}: its preprocessing has a step vwt cannot reproduce: {step!r}")
    if size is None or mean is None:
        raise ValueError(f"{source}: expected a Resize and a Normalize in its preprocessing, got {transform!r}")
    return EvalTransform(size, crop, resample, mean, std, source)


def eval_transform(name: str) -> EvalTransform:
    """The eval preprocessing of a timm or open_clip model, by name (``timm:<model>``, ``open_clip:<model>``).

    timm: ``create_transform(**resolve_model_data_config(model))`` of ``timm.create_model(name,
    pretrained=False)``. open_clip: the preprocessing transform of ``create_model_and_transforms(name,
    pretrained=None)``, both built on the ``meta`` device (no weights are made or downloaded).
    """
    if not is_eval_transform_name(name):
        raise ValueError(f"expected timm:<model> or open_clip:<model>, got {name!r}")
    library, model_name = name.split(":", 1)
    try:
        module = importlib.import_module(library)
    except (ImportError, RuntimeError) as error:  # RuntimeError: torchvision next to another torch build
        raise ImportError(f"{name} needs {library} (pip install 'vwt[{library}]'; docs/models.md says which torch "
                          f"build torchvision needs): {error}") from error
    if library == "timm":
        from timm.data import create_transform, resolve_model_data_config

        model = module.create_model(model_name, pretrained=False, device="meta")  # the config only: no weights
        transform = create_transform(**resolve_model_data_config(model), is_training=False)
    else:
        transform = module.create_model_and_transforms(model_name, pretrained=None, device="meta")[2]
    return _from_torchvision(transform, name)
