"""Worker-side streaming: decode a chunk of images, preprocess it, cut patches and sample them.

Everything here is a pure function of its inputs (the chunk, a :class:`ChunkJob` and the chunk's
index), so a chunk gives the same patches in the main process, in any worker process and on any
rank of a ``torchrun`` job: that is what makes a build's words independent of ``--num-workers``
and of the number of machines.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..patches import check_patch_grid, patchify
from ..preprocess import preprocess_images
from .data import ImageRecord

__all__ = ["DRAFT_GAP", "ChunkJob", "ChunkResult", "draft_scale", "open_image", "decode_record", "sample_patches", "process_chunk"]

logger = logging.getLogger(__name__)

DRAFT_GAP = 4.0
"""JPEG draft decoding keeps at least this many decoded pixels per output pixel of the processor's resize, per side.

Pillow uses the same two-step resize (``reducing_gap``; ``Image.thumbnail`` drafts JPEGs) and calls 3.0
"indistinguishable from fair resampling in most cases"; 4.0 keeps the processor's output within its own
tolerance on every embedded photo (``tests/test_decode.py``), where 3.0 did not on a fine texture.
"""


def draft_scale(image_size: tuple[int, int], resize: dict[str, Any] | None, gap: float = DRAFT_GAP) -> int:
    """The JPEG DCT scale (1, 2, 4 or 8) to decode at before the processor resizes: 1 means full size.

    A scale is used only where it divides both sides, so that the reduced image covers exactly the same
    area (libjpeg rounds a partial block up, which would shift the processor's resize by a fraction of
    a pixel), and only where it keeps ``gap`` decoded pixels per output pixel of the resize.

    Args:
        image_size: the file's ``(width, height)``.
        resize: the processor's ``size`` dict (``shortest_edge``, or ``height`` and ``width``); ``None``
            when the processor does not resize.
        gap: decoded pixels kept per output pixel of the resize, per side.
    """
    width, height = image_size
    if not resize:
        return 1
    if resize.get("shortest_edge") and not resize.get("longest_edge"):
        need_w = need_h = gap * resize["shortest_edge"] / min(width, height)
        need_w, need_h = width * need_w, height * need_h
    elif resize.get("height") and resize.get("width"):
        need_w, need_h = gap * resize["width"], gap * resize["height"]
    else:
        return 1
    for scale in (8, 4, 2):
        if width % scale == 0 and height % scale == 0 and width // scale >= need_w and height // scale >= need_h:
            return scale
    return 1


def open_image(source: Any, resize: dict[str, Any] | None = None) -> Image.Image:
    """Decode a file path or a ``datasets`` image cell (``{"bytes", "path"}``) into a loaded PIL image.

    A JPEG much larger than the processor's resize target is decoded at a reduced scale (libjpeg's
    DCT scaling, ``Image.draft``), see :func:`draft_scale`.
    """
    if isinstance(source, dict):
        data, path = source.get("bytes"), source.get("path")
        source = io.BytesIO(data) if data is not None else path
    image = Image.open(source)
    try:
        if image.format == "JPEG":
            scale = draft_scale(image.size, resize)
            if scale > 1:
                image.draft("RGB" if image.mode == "RGB" else None, (image.width // scale, image.height // scale))
        image.load()  # decode now so that truncated files fail here (a single-frame file is closed by load)
    except BaseException:
        image.close()
        raise
    return image


def decode_record(record: ImageRecord, resize: dict[str, Any] | None = None) -> ImageRecord:
    """A record with its image decoded (``source`` set), or with ``error`` set where decoding fails."""
    if record.source is None or record.error is not None:
        return record
    try:
        return ImageRecord(record.name, open_image(record.source, resize))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return ImageRecord(record.name, error=f"{type(err).__name__}: {err}")


@dataclass(frozen=True)
class ChunkJob:
    """What turns a chunk of records into patches: the same in every process."""

    # The model's image processor (a Hugging Face image processor object, picklable).
    processor: Any
    patch_size: int
    # Patches sampled per image (None: all of them).
    patches_per_image: int | None
    # Seed of the per-chunk patch sampling.
    seed: int
    # The processor's resize ``size`` dict, for JPEG draft decoding (None: decode at full size).
    resize: dict[str, Any] | None = None


@dataclass
class ChunkResult:
    """The patches of one chunk and what was skipped in it."""

    # Position of the chunk in the whole stream.
    index: int
    # ``[n, C * p * p]`` float32 patches, images in stream order.
    patches: np.ndarray
    # Images whose patches are in ``patches``.
    num_images: int = 0
    # ``(name, reason)`` of each unreadable image.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _pixel_values(records: list[ImageRecord], processor: Any, skipped: list[tuple[str, str]]) -> torch.Tensor | None:
    """``[B, C, H, W]`` of the readable images; a failing batch is retried image by image to find the bad one."""
    readable = []
    for record in records:
        if record.error is not None:
            skipped.append((record.name, record.error))
        else:
            readable.append(record)
    if not readable:
        return None
    try:
        return preprocess_images([r.image for r in readable], processor)
    except Exception:  # noqa: BLE001 - isolate the image that fails, below
        pass
    good = []
    for record in readable:
        try:
            good.append(preprocess_images([record.image], processor))
        except Exception as err:  # noqa: BLE001 - any decoder/processor failure skips that image
            skipped.append((record.name, f"{type(err).__name__}: {err}"))
    return torch.cat(good) if good else None


def sample_patches(patches: np.ndarray, count: int | None, rng: np.random.Generator) -> np.ndarray:
    """``[B, N, D]`` -> ``[B, min(count, N), D]``: an independent sample without replacement per image."""
    b, n, _ = patches.shape
    if count is None or count >= n:
        return patches
    index = np.argsort(rng.random((b, n)), axis=1)[:, :count]  # argsort of uniform noise
    return np.take_along_axis(patches, index[..., None], axis=1)


def process_chunk(job: ChunkJob, index: int, records: list[ImageRecord]) -> ChunkResult:
    """Decode, preprocess, patchify and sample chunk number ``index`` of the stream.

    The sampling generator is seeded by ``(job.seed, index)``: a chunk's patches do not depend on which
    process handles it, nor on what was handled before.
    """
    skipped: list[tuple[str, str]] = []
    pixels = _pixel_values([decode_record(r, job.resize) for r in records], job.processor, skipped)
    if pixels is None:
        return ChunkResult(index, np.zeros((0, 0), dtype=np.float32), 0, skipped)
    check_patch_grid(pixels.shape[-2], pixels.shape[-1], job.patch_size)
    patches = patchify(pixels, job.patch_size).numpy()  # [B, N, D]
    patches = sample_patches(patches, job.patches_per_image, np.random.default_rng([job.seed, index]))
    flat = np.ascontiguousarray(patches.reshape(-1, patches.shape[-1]), dtype=np.float32)
    return ChunkResult(index, flat, len(pixels), skipped)
