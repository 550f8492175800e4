"""Held-out real photos: a vocabulary from one half of the embedded sample photos, evaluation on the other.

The vocabularies shipped in ``vocabularies/`` were learned from all 18 sample photos, so their token
counts and fidelity on those photos are in-sample. For an honest frontier, :func:`split_photos` puts the
even-numbered photos into the vocabulary's sample and the odd-numbered ones aside; the vocabulary sees
each of its photos at three scales and mirrored (:func:`vocabulary_views`), and evaluation uses five
crops of each held-out photo (:func:`five_crops`): different views of photos the vocabulary never saw.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from ..preprocess import preprocess_images, to_rgb_image

__all__ = ["split_photos", "vocabulary_views", "five_crops", "heldout_pixel_values", "build_heldout_vocabulary"]

logger = logging.getLogger(__name__)


def split_photos(photos: Sequence[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """``(vocabulary photos, held-out photos)``: even and odd positions of ``photos``."""
    return list(photos[0::2]), list(photos[1::2])


def _pil(image: Any) -> Image.Image:
    return image.convert("RGB") if isinstance(image, Image.Image) else to_rgb_image(image)


def vocabulary_views(photos: Sequence[tuple[str, Any]], scales: Sequence[float] = (1.0, 1.5, 2.0)) -> list[Image.Image]:
    """Each photo upscaled by each of ``scales`` (the processor's center crop then sees a zoomed-in
    part), plain and mirrored: ``2 * len(scales)`` images per photo."""
    views = []
    for _, image in photos:
        pil = _pil(image)
        for scale in scales:
            scaled = pil if scale == 1.0 else pil.resize((round(pil.width * scale), round(pil.height * scale)),
                                                         Image.BICUBIC)
            views += [scaled, ImageOps.mirror(scaled)]
    return views


def five_crops(image: Any, fraction: float = 1.0) -> list[Image.Image]:
    """The center and four corner squares of side ``fraction`` of the shorter side; the processor then
    resizes and center-crops each, so the center square gives exactly the usual preprocessing."""
    pil = _pil(image)
    side = round(min(pil.size) * fraction)
    w, h = pil.size
    corners = [((w - side) // 2, (h - side) // 2), (0, 0), (w - side, 0), (0, h - side), (w - side, h - side)]
    return [pil.crop((x, y, x + side, y + side)) for x, y in corners]


def heldout_pixel_values(photos: Sequence[tuple[str, Any]], image_processor: Any, crops: int = 5
                         ) -> tuple[torch.Tensor, list[str]]:
    """``[len(photos) * crops, C, H, W]`` pixel values of the first ``crops`` of :func:`five_crops` of each
    photo (preprocessed by the model's processor), and their names."""
    if not 1 <= crops <= 5:
        raise ValueError(f"crops must be between 1 and 5, got {crops}")
    images, names = [], []
    for name, image in photos:
        for index, crop in enumerate(five_crops(image)[:crops]):
            images.append(crop)
            names.append(f"{name}#crop{index}")
    return preprocess_images(images, image_processor), names


def build_heldout_vocabulary(photos: Sequence[tuple[str, Any]], k: int, patch_size: int, image_processor: Any,
                             out: str | Path, seed: int = 0, scales: Sequence[float] = (1.0, 1.5, 2.0)) -> Path:
    """Build (or reuse) a ``k``-word vocabulary from :func:`vocabulary_views` of ``photos`` (at ``scales``)
    into ``out``."""
    from ..vocab.build import build_vocabulary

    out = Path(out)
    if (out / "vocab.safetensors").is_file():
        return out
    views = vocabulary_views(photos, scales)
    logger.info("building a k=%d vocabulary from %d views of %d photos into %s", k, len(views), len(photos), out)
    build_vocabulary(views, k, patch_size=patch_size, image_processor=image_processor, seed=seed, out=out,
                     progress=False, command=f"vwt-bench --frontier (held-out split, k={k})")
    return out
