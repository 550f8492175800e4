"""Offline: stream images, take patches in the model's pixel space, learn visual words with k-means."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .version import __version__
from .config import VocabularyConfig
from .data import ImageRecord, describe_source, iter_images
from .io import atomic_directory
from .patches import check_patch_grid, patchify
from .preprocess import load_image_processor, preprocess_config, preprocess_images
from .vocabulary import VisualVocabulary

__all__ = ["BuildStats", "build_vocabulary", "iter_patch_batches"]

logger = logging.getLogger(__name__)


@dataclass
class BuildStats:
    """Counts kept while streaming."""

    num_images: int = 0
    num_patches: int = 0
    num_skipped: int = 0
    skipped: list[str] = field(default_factory=list)


def _chunks(records: Iterable[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    chunk: list[ImageRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _skip(stats: BuildStats, record: ImageRecord, reason: str) -> None:
    logger.warning("skipping image %s: %s", record.name, reason)
    stats.num_skipped += 1
    stats.skipped.append(record.name)


def _preprocess_chunk(chunk: list[ImageRecord], processor: Any, stats: BuildStats) -> torch.Tensor | None:
    """Preprocess readable images of a chunk; a failing batch is retried image by image to find the bad one."""
    readable = []
    for record in chunk:
        if record.error is not None:
            _skip(stats, record, record.error)
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
            _skip(stats, record, f"{type(err).__name__}: {err}")
    return torch.cat(good) if good else None


def iter_patch_batches(
    records: Iterable[ImageRecord],
    processor: Any,
    patch_size: int,
    *,
    patches_per_image: int | None = None,
    rng: np.random.Generator,
    stats: BuildStats,
    images_per_chunk: int = 16,
    max_images: int | None = None,
    progress: bool = True,
) -> Iterator[np.ndarray]:
    """Stream ``[n, C * p * p]`` float32 patch arrays, one per chunk of images, updating ``stats``."""
    bar = tqdm(total=max_images, unit="img", desc="images", disable=not progress)
    try:
        for chunk in _chunks(records, images_per_chunk):
            if max_images is not None:
                chunk = chunk[: max_images - stats.num_images - stats.num_skipped]
            pixels = _preprocess_chunk(chunk, processor, stats)
            bar.update(len(chunk))
            if pixels is not None:
                check_patch_grid(pixels.shape[-2], pixels.shape[-1], patch_size)
                patches = patchify(pixels, patch_size).numpy()  # [B, N, D]
                b, n, d = patches.shape
                if patches_per_image is not None and patches_per_image < n:
                    # Independent sample without replacement per image: argsort of uniform noise.
                    index = np.argsort(rng.random((b, n)), axis=1)[:, :patches_per_image]
                    patches = np.take_along_axis(patches, index[..., None], axis=1)
                flat = np.ascontiguousarray(patches.reshape(-1, d), dtype=np.float32)
                stats.num_images += b
                stats.num_patches += flat.shape[0]
                bar.set_postfix(patches=stats.num_patches, skipped=stats.num_skipped)
                yield flat
            if max_images is not None and stats.num_images + stats.num_skipped >= max_images:
                break
    finally:
        bar.close()


def _is_dataset_id(data: Any) -> bool:
    """Whether ``data`` names a ``datasets`` hub dataset (not ``sample``, a folder or an iterable)."""
    if not isinstance(data, (str, os.PathLike)) or str(data) == "sample":
        return False
    return not Path(data).expanduser().is_dir()


def _new_kmeans(first: np.ndarray, k: int, batch_size: int, seed: int) -> Any:
    """MiniBatchKMeans seeded by k-means++ on the first patches.

    k-means++ runs here in float64 on the first ``max(3 * k, batch_size)`` patches at most: scikit-learn's own float32 path
    through ``partial_fit`` is several times slower for k in the thousands.
    """
    from sklearn.cluster import MiniBatchKMeans, kmeans_plusplus

    sample = first[: max(3 * k, batch_size)].astype(np.float64)
    centers, _ = kmeans_plusplus(sample, k, random_state=seed)
    return MiniBatchKMeans(
        n_clusters=k, batch_size=batch_size, random_state=seed, n_init=1, init=centers.astype(np.float32)
    )


def build_vocabulary(
    data: str | os.PathLike | Iterable[Any] = "sample",
    k: int = 1000,
    *,
    split: str = "train",
    patch_size: int = 16,
    image_processor: str | os.PathLike | Any | None = None,
    patches_per_image: int | None = None,
    batch_size: int = 4096,
    max_images: int | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str = "",
    dataset_kwargs: dict[str, Any] | None = None,
) -> VisualVocabulary:
    """Learn ``k`` visual words from a stream of images with ``MiniBatchKMeans.partial_fit``.

    Images are preprocessed exactly as the model's image processor does (default: CLIP ViT-B/16's),
    cut into ``patch_size`` patches flattened channel-major, optionally sub-sampled per image, and fed
    to k-means in batches of ``batch_size`` patches. The same ``seed`` reproduces the words bit for bit.

    Args:
        data: see :func:`vwt.data.iter_images` (``"sample"``, ``"imagenet"``, a folder, a datasets id, an iterable).
        k: number of words.
        split: datasets split.
        patch_size: the model's patch size.
        image_processor: a hub id or directory of the model's image processor, or a processor object;
            ``None`` for CLIP ViT-B/16's.
        patches_per_image: patches sampled per image (``None``: all).
        batch_size: patches per ``partial_fit`` call (the first call gets at least ``k``).
        max_images: stop after this many images (read or skipped).
        seed: seed of patch sampling and k-means.
        out: if given, save there atomically (nothing is left behind if the build fails).
        overwrite: replace an existing ``out``.
        progress: show a tqdm bar.
        command: the command line that rebuilds this vocabulary, recorded in its card.
        dataset_kwargs: passed to ``datasets.load_dataset``.

    Raises:
        ValueError: bad arguments, or fewer usable patches than ``k`` (e.g. an empty stream).
    """
    if k < 1 or batch_size < 1 or patch_size < 1:
        raise ValueError(f"k, batch_size and patch_size must be positive (got {k}, {batch_size}, {patch_size})")
    if patches_per_image is not None and patches_per_image < 1:
        raise ValueError(f"patches_per_image must be positive, got {patches_per_image}")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be positive, got {max_images}")
    if out is not None and os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    processor = image_processor
    if processor is None or isinstance(processor, (str, os.PathLike)):
        processor = load_image_processor(processor)
    pre = preprocess_config(processor)
    check_patch_grid(*pre.image_size, patch_size)

    rng = np.random.default_rng(seed)
    kmeans = None
    stats = BuildStats()
    buffer: list[np.ndarray] = []
    buffered = 0
    fitted = False
    records = iter_images(data, split, **(dataset_kwargs or {}))
    if max_images is not None:  # never read (decode, download) past the images that will be used
        records = itertools.islice(records, max_images)
    batches = iter_patch_batches(
        records,
        processor,
        patch_size,
        patches_per_image=patches_per_image,
        rng=rng,
        stats=stats,
        max_images=max_images,
        progress=progress,
    )
    for patches in batches:
        buffer.append(patches)
        buffered += len(patches)
        while buffered >= max(batch_size, 0 if fitted else k):
            stacked = np.concatenate(buffer)
            take = len(stacked) if not fitted else batch_size
            kmeans = kmeans or _new_kmeans(stacked, k, batch_size, seed)
            kmeans.partial_fit(stacked[:take])
            fitted = True
            buffer, buffered = [stacked[take:]], len(stacked) - take
    if buffered and (fitted or buffered >= k):
        stacked = np.concatenate(buffer)
        kmeans = kmeans or _new_kmeans(stacked, k, batch_size, seed)
        kmeans.partial_fit(stacked)
        fitted = True
    if not fitted:
        raise ValueError(
            f"not enough patches to learn {k} words: {stats.num_patches} patches from {stats.num_images} images "
            f"({stats.num_skipped} skipped) in {describe_source(data)!r}"
        )
    if stats.num_skipped:
        logger.warning("skipped %d unreadable images", stats.num_skipped)
    config = VocabularyConfig(
        k=k,
        patch_size=patch_size,
        num_channels=len(pre.image_mean),
        preprocess=pre,
        dataset=describe_source(data),
        split=split if _is_dataset_id(data) else None,
        num_images=stats.num_images,
        num_patches=stats.num_patches,
        num_skipped=stats.num_skipped,
        patches_per_image=patches_per_image,
        batch_size=batch_size,
        seed=seed,
        vwt_version=__version__,
        command=command,
    )
    vocab = VisualVocabulary(torch.from_numpy(kmeans.cluster_centers_.astype(np.float32)), config)
    if out is not None:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            vocab.save_pretrained(tmp)
    return vocab
