"""Images to ``pixel_values`` exactly as a model's Hugging Face image processor makes them."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .config import PreprocessConfig, processor_output_size
from .io import check_local_path, read_json

__all__ = [
    "composites_transparency",
    "default_image_processor",
    "load_image_processor",
    "preprocess_config",
    "image_processor_from_config",
    "to_rgb_image",
    "preprocess_images",
]

logger = logging.getLogger(__name__)

PROCESSOR_CONFIG_FILE = "preprocessor_config.json"


def default_image_processor() -> Any:
    """CLIP ViT-B/16's processor: shortest side to 224 (bicubic), center crop 224, CLIP mean/std."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil()


def load_image_processor(name_or_path: str | os.PathLike | None = None, **kwargs: Any) -> Any:
    """A model's image processor from a hub id or local directory (PIL backend); ``None``: the default.

    ``timm:<model>`` or ``open_clip:<model>`` is that library's eval preprocessing, read off its
    torchvision transform (:func:`vwt.eval_transform.eval_transform`; no weights are downloaded).
    """
    if name_or_path is None:
        return default_image_processor()
    from .eval_transform import eval_transform, is_eval_transform_name

    if is_eval_transform_name(name_or_path):
        if kwargs:
            raise TypeError(f"{name_or_path} takes no processor options, got {sorted(kwargs)}")
        return eval_transform(str(name_or_path))
    from transformers import AutoImageProcessor

    check_local_path(name_or_path)  # a mistyped directory is an error here, never a hub lookup
    config = Path(name_or_path) / PROCESSOR_CONFIG_FILE
    if os.path.isdir(name_or_path) and os.path.lexists(config):
        read_json(config)  # transformers reads it without limits: refuse a device, a huge or a broken file first
    return AutoImageProcessor.from_pretrained(str(name_or_path), backend="pil", **kwargs)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: int(v) if hasattr(v, "__int__") else str(v)))


def preprocess_config(processor: Any) -> PreprocessConfig:
    """Record an image processor as a :class:`PreprocessConfig`."""
    proc = _jsonable(processor.to_dict())
    proc.pop("_processor_class", None)
    mean = proc.get("image_mean") if proc.get("do_normalize", True) else None
    std = proc.get("image_std") if proc.get("do_normalize", True) else None
    if mean is None or std is None:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return PreprocessConfig(
        processor_type=str(proc.get("image_processor_type", type(processor).__name__)),
        processor=proc,
        image_size=processor_output_size(proc),
        image_mean=tuple(mean),
        image_std=tuple(std),
    )


def image_processor_from_config(config: PreprocessConfig) -> Any:
    """Rebuild the recorded image processor (PIL backend), with no files and no network."""
    import transformers

    from .eval_transform import EVAL_TRANSFORM_TYPE, EvalTransform

    if config.processor_type == EVAL_TRANSFORM_TYPE:  # timm's or open_clip's torchvision preprocessing
        return EvalTransform.from_dict(dict(config.processor))
    name = config.processor_type.removesuffix("Fast")
    cls = getattr(transformers, name + "Pil", None) or getattr(transformers, name, None)
    if cls is None:
        raise ValueError(f"unknown image processor type {config.processor_type!r} in this transformers version")
    return cls.from_dict(dict(config.processor))


def to_rgb_image(image: Any) -> Image.Image:
    """A PIL image, an ``[H, W]``/``[H, W, C]`` array, or a ``[C, H, W]`` tensor to an 8-bit RGB PIL image.

    PIL images are converted exactly as the Hugging Face image processors convert them
    (``transformers.image_transforms.convert_to_rgb``): transparency (RGBA, LA, a palette with a
    transparent index) is composited onto white, other modes go through Pillow's ``convert("RGB")``
    (16-bit grayscale saturates at 255, as the processor's does). Arrays and tensors are first made 8-bit
    (16-bit scaled down by 256, floats in [0, 1] scaled up by 255, bool to 0/255), then converted the same way.
    """
    from transformers.image_transforms import convert_to_rgb

    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)
        image = array
    if isinstance(image, np.ndarray):
        image = Image.fromarray(_uint8(image))
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise ValueError("image has zero width or height")
    if image.mode == "RGB":
        return image
    if composites_transparency():
        return Image.fromarray(convert_to_rgb(image, return_numpy=True))
    return convert_to_rgb(image)  # transformers 5.18-5.2x: a plain Pillow convert("RGB"), returned as PIL


@functools.cache
def composites_transparency() -> bool:
    """Whether the installed transformers' ``convert_to_rgb`` composites transparency onto white.

    Newer releases do (and take ``return_numpy``); transformers 5.18 converts with Pillow's
    ``convert("RGB")``, which keeps the hidden colours under transparent pixels. Either way
    :func:`to_rgb_image` does what the installed processors do.
    """
    from transformers.image_transforms import convert_to_rgb

    return "return_numpy" in inspect.signature(convert_to_rgb).parameters


def _uint8(array: np.ndarray) -> np.ndarray:
    """An ``[H, W]``/``[H, W, 3|4]`` array as uint8 (see :func:`to_rgb_image`)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"cannot read an image array of shape {array.shape}")
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("image array has NaN or infinite values")
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(array * scale, 0, 255).round().astype(np.uint8)
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    return array if array.dtype == np.uint8 else np.clip(array, 0, 255).astype(np.uint8)


def preprocess_images(images: Sequence[Any], processor: Any) -> torch.Tensor:
    """Run the image processor on a list of images.

    Returns:
        ``[B, C, H, W]`` float32 pixel values.
    """
    if len(images) == 0:
        raise ValueError("no images to preprocess")
    rgb = [to_rgb_image(im) for im in images]
    return processor(images=rgb, return_tensors="pt")["pixel_values"].float()
