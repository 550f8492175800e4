"""Pictures of which patches became which token: numpy and PIL only.

Given an image ``[H, W, 3]`` uint8 cut into ``p x p`` patches (``N = (H / p) * (W / p)``, raster order)
and ``patch_to_token`` ``[N]`` (the tokenizers' output for one image; ``-1`` = dropped), or a ToMe
``source`` ``[T, N]`` matrix:

- patches merged into one token (a token of two or more patches) are tinted with that token's colour
  from a deterministic palette of distinct colours (:func:`palette`); merged tokens are coloured in the
  raster order of their first patch, so the same grouping always gets the same colours;
- a token of a single patch is left plain: the original pixels;
- dropped patches are dimmed.

With ``alpha=1`` a merged patch is exactly its token's colour; by default (``alpha=0.55``) the image
shows through the tint.
"""

from __future__ import annotations

import colorsys
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "palette",
    "source_to_patch_to_token",
    "merged_colour_index",
    "draw_tokens",
    "image_from_pixel_values",
    "side_by_side",
    "save_png",
]

logger = logging.getLogger(__name__)

_GOLDEN = 0.6180339887498949
# (saturation, value) levels cycled with the hue: bright enough to tell from dimmed (dropped) patches.
_LEVELS = ((0.90, 1.00), (0.60, 0.90), (1.00, 0.75), (0.45, 1.00))


def _candidate(j: int) -> tuple[int, int, int]:
    saturation, value = _LEVELS[(j // 7) % len(_LEVELS)]
    r, g, b = colorsys.hsv_to_rgb((j * _GOLDEN) % 1.0, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


@functools.lru_cache(maxsize=16)
def _palette(n: int) -> np.ndarray:
    chosen = np.zeros((n, 3), dtype=np.int64)
    count = 0
    spread = 64  # the least per-channel difference required between two colours; halved when it runs out
    j = 0
    while count < n:
        colour = np.array(_candidate(j))
        j += 1
        if count == 0 or np.abs(chosen[:count] - colour).max(axis=1).min() >= spread:
            chosen[count] = colour
            count += 1
        if j >= 16 * (count + 1) + 64:  # the colour wheel is crowded at this spread: relax it, start over
            if spread == 1:
                raise ValueError(f"cannot make {n} distinct colours")
            spread //= 2
            j = 0
    out = chosen.astype(np.uint8)
    out.setflags(write=False)
    return out


def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours ``[n, 3]`` uint8, the same for the same ``n``; earlier ones differ most.

    Hues step by the golden ratio through saturated, bright colours; each colour differs from every
    earlier one by at least 64 in some channel while that is possible, then by 32, 16, ... (always >= 1).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return _palette(int(n)).copy()


def source_to_patch_to_token(source: torch.Tensor | np.ndarray) -> np.ndarray:
    """ToMe's ``source`` ``[T, N]`` (1 where token ``t`` holds patch ``n``) to ``patch_to_token`` ``[N]``.

    A patch held by no token (a row of zeros, e.g. ToMe's CLS row, holds none) gets -1.

    Raises:
        ValueError: a patch held by two tokens.
    """
    src = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    if src.ndim != 2:
        raise ValueError(f"source must be [T, N], got shape {src.shape}")
    held = src != 0
    per_patch = held.sum(axis=0)  # [N]
    if (per_patch > 1).any():
        raise ValueError(f"patches {np.flatnonzero(per_patch > 1)[:5].tolist()} are held by more than one token")
    return np.where(per_patch == 1, held.argmax(axis=0), -1).astype(np.int64)


def _as_numpy(patch_to_token: torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    if isinstance(patch_to_token, torch.Tensor):
        patch_to_token = patch_to_token.detach().cpu().numpy()
    array = np.asarray(patch_to_token)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"patch_to_token must be one image's [N] integer array, got {array.dtype} {array.shape}")
    if (array < -1).any():
        raise ValueError("patch_to_token values must be >= -1 (-1: dropped)")
    return array.astype(np.int64)


def merged_colour_index(patch_to_token: torch.Tensor | np.ndarray | Sequence[int]) -> np.ndarray:
    """The palette index of each patch: ``[N]`` int64, -1 for single-patch tokens and dropped patches.

    Tokens holding two or more patches are numbered 0, 1, ... in the raster order of their first patch.
    """
    tokens = _as_numpy(patch_to_token)
    out = np.full(tokens.shape, -1, dtype=np.int64)
    kept = tokens >= 0
    if not kept.any():
        return out
    ids, first, counts = np.unique(tokens[kept], return_index=True, return_counts=True)
    merged = counts >= 2
    rank = np.full(ids.max() + 1, -1, dtype=np.int64)
    order = np.argsort(first[merged], kind="stable")  # merged tokens by their first kept patch
    rank[ids[merged][order]] = np.arange(int(merged.sum()))
    out[kept] = rank[tokens[kept]]
    return out


def draw_tokens(
    image: np.ndarray,
    patch_size: int,
    patch_to_token: torch.Tensor | np.ndarray | Sequence[int],
    *,
    alpha: float = 0.55,
    dim: float = 0.3,
) -> np.ndarray:
    """Tint merged patches with their token's colour, keep single patches, dim dropped ones.

    Args:
        image: ``[H, W, 3]`` uint8, ``H`` and ``W`` multiples of ``patch_size``.
        patch_size: p.
        patch_to_token: ``[N]`` (or ``[1, N]``) token of each patch in raster order, -1 = dropped;
            ``N = (H / p) * (W / p)``.
        alpha: weight of the colour over the image in merged patches (1: solid colour).
        dim: factor on the pixels of dropped patches.

    Returns:
        ``[H, W, 3]`` uint8.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8, got {image.dtype} {image.shape}")
    if not 0.0 <= alpha <= 1.0 or not 0.0 <= dim <= 1.0:
        raise ValueError(f"alpha and dim must be in [0, 1], got {alpha} and {dim}")
    h, w, _ = image.shape
    if patch_size < 1 or h % patch_size or w % patch_size:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch_size}")
    rows, cols = h // patch_size, w // patch_size
    index = merged_colour_index(patch_to_token)
    if index.shape[0] != rows * cols:
        raise ValueError(f"patch_to_token has {index.shape[0]} patches, a {h}x{w} image has {rows * cols}")
    dropped = _as_numpy(patch_to_token) < 0
    colours = palette(int(index.max()) + 1).astype(np.float64)  # [M, 3]

    def per_pixel(grid: np.ndarray) -> np.ndarray:  # [rows * cols, ...] -> [H, W, ...]
        grid = grid.reshape(rows, cols, *grid.shape[1:])
        return grid.repeat(patch_size, axis=0).repeat(patch_size, axis=1)

    pixels = image.astype(np.float64)
    merged = per_pixel(index >= 0)[..., None]  # [H, W, 1]
    tint = per_pixel(colours[np.maximum(index, 0)] if len(colours) else np.zeros((rows * cols, 3)))
    out = np.where(merged, (1.0 - alpha) * pixels + alpha * tint, pixels)
    out = np.where(per_pixel(dropped)[..., None], pixels * dim, out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def image_from_pixel_values(
    pixel_values: torch.Tensor | np.ndarray,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    rescale_factor: float = 1 / 255,
) -> np.ndarray:
    """Undo an image processor's rescale and normalization: ``[C, H, W]`` (or ``[1, C, H, W]``) -> ``[H, W, 3]`` uint8.

    ``pixel = (value * std + mean) / rescale_factor``, rounded and clipped to 0..255; one channel is
    repeated to three.
    """
    pv = pixel_values.detach().cpu().numpy() if isinstance(pixel_values, torch.Tensor) else np.asarray(pixel_values)
    if pv.ndim == 4 and pv.shape[0] == 1:
        pv = pv[0]
    if pv.ndim != 3 or pv.shape[0] not in (1, 3) or len(image_mean) != pv.shape[0] or len(image_std) != pv.shape[0]:
        raise ValueError(f"pixel_values must be [C, H, W] with one mean/std per channel, got {pv.shape}")
    mean = np.asarray(image_mean, dtype=np.float64)[:, None, None]
    std = np.asarray(image_std, dtype=np.float64)[:, None, None]
    rgb = np.clip(np.rint((pv.astype(np.float64) * std + mean) / rescale_factor), 0, 255).astype(np.uint8)
    rgb = rgb.transpose(1, 2, 0)
    return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb


def side_by_side(panels: Sequence[np.ndarray], *, scale: int = 1, gap: int = 8) -> np.ndarray:
    """Panels ``[H, W, 3]`` uint8 of one height, each enlarged ``scale`` times (nearest), with white gaps.

    Returns:
        ``[H * scale, sum(W) * scale + gap * (len(panels) - 1), 3]`` uint8.
    """
    if not panels or len({p.shape[0] for p in panels}) != 1:
        raise ValueError("give one or more panels of the same height")
    if scale < 1 or gap < 0:
        raise ValueError(f"scale must be >= 1 and gap >= 0, got {scale} and {gap}")
    big = [np.asarray(p, dtype=np.uint8).repeat(scale, axis=0).repeat(scale, axis=1) for p in panels]
    spacer = np.full((big[0].shape[0], gap, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, panel in enumerate(big):
        parts += [spacer, panel] if i else [panel]
    return np.concatenate(parts, axis=1)


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an ``[H, W, 3]`` uint8 array as a PNG (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, format="PNG")
    logger.debug("wrote %s", path)
    return path
