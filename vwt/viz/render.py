"""One image through one method, drawn: the panels that ``vwt-viz`` writes.

Each renderer preprocesses the image as the method's model would, runs the method, and returns a
:class:`Rendered` with the preprocessed image (un-normalized), the overlay of :func:`vwt.viz.draw_tokens`
and a caption; :func:`compose` lays them side by side over the caption.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..methods.tome import ToMe
from ..preprocess import preprocess_config, preprocess_images
from ..tokenize.intra import IntraImageTokenizer
from ..tokenize.tokenizer import VisualWordTokenizer
from ..vocab.data import sample_images
from ..vocab.vocabulary import VisualVocabulary
from .draw import (
    draw_tokens,
    image_from_pixel_values,
    side_by_side,
    source_to_patch_to_token,
)

__all__ = [
    "CAPTION_HEIGHT",
    "DEFAULT_IMAGE",
    "Rendered",
    "compose",
    "default_vocabulary_dir",
    "load_image",
    "render_intra",
    "render_tome",
    "render_vwt",
]

DEFAULT_IMAGE = "skimage/chelsea"
"""The embedded sample photo drawn when no ``--image`` is given."""
CAPTION_HEIGHT = 24
"""Pixels of the caption strip under the panels (0 with ``--no-caption``)."""


@dataclass(frozen=True)
class Rendered:
    """One image through one method."""

    # [H, W, 3] uint8: the preprocessed image, un-normalized.
    image: np.ndarray
    # [H, W, 3] uint8: the overlay (merged patches tinted, singles plain, dropped dimmed).
    overlay: np.ndarray
    # [N] int64: the token of each patch, -1 dropped.
    patch_to_token: np.ndarray
    # Tokens the image became (CLS excluded) out of num_patches.
    num_tokens: int
    num_patches: int
    # One line saying what was drawn.
    caption: str


def load_image(spec: str | os.PathLike | None = None) -> tuple[str, Any]:
    """An image file, or an embedded sample photo by name (``skimage/astronaut``, ``astronaut``, ``grace_hopper``).

    Returns:
        ``(name, image)`` with a PIL image or an ``[H, W(, C)]`` array.
    """
    from PIL import Image

    spec = DEFAULT_IMAGE if spec is None else str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        with Image.open(path) as image:
            image.load()
            return path.name, image.copy()
    samples = sample_images()
    for name, image in samples:
        short = name.split("/")[-1]
        if spec in (name, short, short.rsplit(".", 1)[0]):
            return name, image
    names = ", ".join(name for name, _ in samples)
    raise FileNotFoundError(f"{spec!r} is neither an image file nor a sample photo ({names})")


def default_vocabulary_dir() -> Path | None:
    """``vocabularies/clip-p16-k100`` of a source checkout, where there is one."""
    path = Path(__file__).resolve().parents[1] / "vocabularies" / "clip-p16-k100"
    return path if (path / "config.json").is_file() else None


def _rescale_factor(processor: Any) -> float:
    if not getattr(processor, "do_rescale", True):
        return 1.0
    return float(getattr(processor, "rescale_factor", 1 / 255))


def _display(pixel_values: torch.Tensor, processor: Any) -> np.ndarray:
    pre = preprocess_config(processor)
    return image_from_pixel_values(pixel_values[0], pre.image_mean, pre.image_std, _rescale_factor(processor))


def _rendered(image: np.ndarray, patch_size: int, patch_to_token: np.ndarray, caption: str) -> Rendered:
    kept = patch_to_token[patch_to_token >= 0]
    num_tokens = int(np.unique(kept).size)
    return Rendered(image, draw_tokens(image, patch_size, patch_to_token), patch_to_token, num_tokens,
                    int(patch_to_token.size), f"{caption}: {num_tokens}/{patch_to_token.size} tokens")


def render_vwt(image: Any, vocabulary: Any, threshold: float = 0.1) -> Rendered:
    """Visual words: ``vocabulary`` is a :class:`~vwt.VisualVocabulary` or its directory / hub id."""
    if not isinstance(vocabulary, VisualVocabulary):
        vocabulary = VisualVocabulary.from_pretrained(str(vocabulary))
    tokenizer = VisualWordTokenizer(vocabulary, threshold=threshold)
    batch = tokenizer([image])
    p2t = batch["patch_to_token"][0].numpy()
    c = vocabulary.config
    return _rendered(_display(batch["pixel_values"], tokenizer.image_processor), c.patch_size, p2t,
                     f"vwt k={c.k} p={c.patch_size} threshold={threshold:g}")


def render_intra(image: Any, keep: float | None = None, patch_size: int = 16, image_processor: Any = None, *,
                 max_tokens: int | None = None) -> Rendered:
    """Intra-image: keep the patches of highest pixel variance, a fraction ``keep`` (default 0.5) or
    ``max_tokens`` of them (default processor: CLIP ViT-B/16's)."""
    tokenizer = IntraImageTokenizer(keep=keep, patch_size=patch_size, image_processor=image_processor,
                                    max_tokens=max_tokens)
    batch = tokenizer([image])
    p2t = batch["patch_to_token"][0].numpy()
    budget = f"keep={tokenizer.keep:g}" if tokenizer.keep is not None else f"max_tokens={tokenizer.max_tokens}"
    return _rendered(_display(batch["pixel_values"], tokenizer.image_processor), patch_size, p2t,
                     f"intra {budget} p={patch_size}")


@torch.no_grad()
def render_tome(image: Any, model: torch.nn.Module, image_processor: Any, r: int = 12) -> Rendered:
    """ToMe with ``r`` merges per layer on ``model``; the final tokens' patches come from ``source``."""
    pixel_values = preprocess_images([image], image_processor)
    tome = ToMe(model, r=r, trace_source=True)
    p2t = source_to_patch_to_token(tome(pixel_values).source[0])
    name = type(tome.model).__name__
    return _rendered(_display(pixel_values, image_processor), tome.adapter.patch_size, p2t,
                     f"ToMe r={r} {name} p={tome.adapter.patch_size}")


def compose(rendered: Rendered, *, scale: int = 2, caption: bool = True, gap: int = 8) -> np.ndarray:
    """Image and overlay side by side, ``scale`` times enlarged, over a caption strip.

    Returns:
        ``[H * scale + CAPTION_HEIGHT (if caption), 2 * W * scale + gap, 3]`` uint8.
    """
    panels = side_by_side([rendered.image, rendered.overlay], scale=scale, gap=gap)
    if not caption:
        return panels
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (panels.shape[1], CAPTION_HEIGHT), "white")
    try:
        font = ImageFont.load_default(size=15)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    ImageDraw.Draw(strip).text((4, 3), rendered.caption, fill="black", font=font)
    return np.concatenate([panels, np.asarray(strip)], axis=0)
