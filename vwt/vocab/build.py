"""Offline: stream images, take patches in the model's pixel space, learn visual words with k-means.

The pieces: :mod:`vwt.vocab.stream` (this process's chunks of the stream, decoded by worker processes in
order), :mod:`vwt.vocab.decode` (a chunk to patches, the same in every process), :mod:`vwt.vocab.checkpoint`
(the streaming k-means and its resumable state) and :mod:`vwt.vocab.distributed` (``torchrun``).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import VocabularyConfig
from ..io import atomic_directory, check_output
from ..patches import check_patch_grid
from ..preprocess import load_image_processor, preprocess_config
from ..version import __version__
from .checkpoint import checkpoint_path
from .data import describe_source, is_dataset_id, source_fingerprint
from .decode import ChunkJob, ChunkResult
from .distributed import (
    DEFAULT_TIMEOUT,
    DistContext,
    agree,
    broadcast_array,
    check_same_settings,
    close_distributed,
    init_distributed,
)
from .kmeans import KMeansStream
from .resume import COUNT_FIELDS, BuildShape, build_settings, restore_build, save_build
from .rounds import WorkerDiedError, deferred_interrupts, iter_rounds
from .stream import iter_chunks, map_chunks
from .vocabulary import VOCABULARY_CONTENTS, VisualVocabulary

__all__ = ["BuildStats", "WorkerDiedError", "build_vocabulary"]

logger = logging.getLogger(__name__)


@dataclass
class BuildStats:
    """Counts kept while streaming (over all ranks); ``skipped`` names this process's unreadable images."""

    num_images: int = 0
    num_patches: int = 0
    num_skipped: int = 0
    skipped: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The counts a checkpoint records."""
        return {key: getattr(self, key) for key in COUNT_FIELDS}


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
    num_workers: int = 0,
    checkpoint_every: int | None = None,
    resume: bool = False,
    images_per_chunk: int = 16,
    dist_timeout: float = DEFAULT_TIMEOUT,
) -> VisualVocabulary:
    """Learn ``k`` visual words from a stream of images with ``MiniBatchKMeans.partial_fit``.

    Images are preprocessed exactly as the model's image processor does (default: CLIP ViT-B/16's),
    cut into ``patch_size`` patches flattened channel-major, optionally sub-sampled per image, and fed
    to k-means in batches of ``batch_size`` patches. The same ``seed`` reproduces the words bit for bit,
    whatever ``num_workers`` is, and whether the build ran in one go or was interrupted and resumed.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank decodes its share of the stream and rank 0 runs
    k-means on the gathered patches, in stream order (see :mod:`vwt.vocab.distributed`); rank 0 writes ``out``
    and the checkpoints, and every rank returns the vocabulary.

    The steps: check the arguments, start (rank 0 checks ``out`` and restores a checkpoint), stream the
    chunks into k-means (saving checkpoints), finish k-means, write ``out``.

    Args:
        data: see :func:`vwt.vocab.data.iter_images` (``"sample"``, ``"imagenet"``, a folder, a datasets id, an iterable).
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
        overwrite: replace an existing ``out`` that holds a vocabulary (or nothing).
        progress: show a tqdm bar.
        command: the command line that rebuilds this vocabulary, recorded in its card.
        dataset_kwargs: passed to ``datasets.load_dataset``.
        num_workers: processes that decode and preprocess images (0: in this process). They are spawned,
            so a script that passes ``num_workers > 0`` must call this under ``if __name__ == "__main__":``.
        checkpoint_every: save a checkpoint beside ``out`` (:func:`vwt.vocab.checkpoint.checkpoint_path`) every
            this many images; SIGINT/SIGTERM also save one (whenever ``out`` is given) before raising
            :class:`KeyboardInterrupt`. The checkpoint is deleted once ``out`` is written.
        resume: continue from the checkpoint beside ``out`` (a fresh start if there is none); the result is
            the vocabulary of an uninterrupted build.
        images_per_chunk: images decoded and preprocessed together (part of what a checkpoint must match).
        dist_timeout: under ``torchrun``, seconds a rank waits for the others before every rank fails.

    Raises:
        ValueError: bad arguments, fewer usable patches than ``k`` (e.g. an empty stream), or ``torchrun``
            ranks given different settings.
        FileExistsError: ``out`` exists (without ``overwrite``), or a checkpoint exists (without ``resume``).
        CheckpointError: the checkpoint is unreadable or inconsistent, or belongs to a build with other
            settings or another source (raised before any image is read).
        WorkerDiedError: a decoding worker process died; a checkpoint was saved (given ``out``) and
            ``resume=True`` continues.
        DistributedError: under ``torchrun``, another rank stalled past ``dist_timeout`` or died.
    """
    _check_arguments(k=k, batch_size=batch_size, patch_size=patch_size, patches_per_image=patches_per_image,
                     max_images=max_images, images_per_chunk=images_per_chunk, checkpoint_every=checkpoint_every,
                     num_workers=num_workers, seed=seed, needs_out=out is None and (checkpoint_every is not None or resume))
    processor = image_processor
    if processor is None or isinstance(processor, (str, os.PathLike)):
        processor = load_image_processor(processor)
    pre = preprocess_config(processor)
    check_patch_grid(*pre.image_size, patch_size)
    context = init_distributed(dist_timeout)
    try:
        settings = build_settings(data, split, k, patch_size, patches_per_image, batch_size, max_images, seed,
                                  images_per_chunk, context.world_size, pre)
        check_same_settings(context, settings)
        grid = (pre.image_size[0] // patch_size) * (pre.image_size[1] // patch_size)
        shape = BuildShape(k, len(pre.image_mean) * patch_size**2, batch_size, min(patches_per_image or grid, grid),
                           images_per_chunk * context.world_size, max_images)
        run = _Run(context, settings, shape, KMeansStream(k, batch_size, seed), BuildStats(),
                   None if out is None else checkpoint_path(out))
        run.rounds = _start(run, out, overwrite, resume,
                            functools.partial(source_fingerprint, data, split, max_images, dataset_kwargs))
        resize = pre.processor.get("size") if pre.processor.get("do_resize", True) else None
        job = ChunkJob(processor, patch_size, patches_per_image, seed, resize)
        chunks = iter_chunks(data, split, images_per_chunk=images_per_chunk, max_images=max_images,
                             rank=context.rank, world_size=context.world_size, start=run.rounds,
                             dataset_kwargs=dataset_kwargs)
        _stream(run, map_chunks(job, chunks, num_workers), checkpoint_every,
                tqdm(total=max_images, initial=run.stats.num_images + run.stats.num_skipped, unit="img",
                     desc="images", disable=not progress or not context.is_main))
        centroids = _finish(run, data)
        if run.stats.num_skipped:
            logger.warning("skipped %d unreadable images", run.stats.num_skipped)
        config = VocabularyConfig(
            k=k,
            patch_size=patch_size,
            num_channels=len(pre.image_mean),
            preprocess=pre,
            dataset=describe_source(data),
            split=split if is_dataset_id(data) else None,
            num_images=run.stats.num_images,
            num_patches=run.stats.num_patches,
            num_skipped=run.stats.num_skipped,
            patches_per_image=patches_per_image,
            batch_size=batch_size,
            seed=seed,
            vwt_version=__version__,
            command=command,
        )
        vocab = VisualVocabulary(torch.from_numpy(np.array(centroids, dtype=np.float32)), config)
        _write(run, vocab, out, overwrite)
        return vocab
    finally:
        close_distributed(context)


def _check_arguments(*, num_workers: int, seed: Any, needs_out: bool, **values: Any) -> None:
    """Raise ``TypeError``/``ValueError`` for a bad argument, before anything is loaded or read."""
    for name in ("k", "batch_size", "patch_size", "patches_per_image", "max_images"):
        value = values[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    for name in ("k", "batch_size", "patch_size", "images_per_chunk"):
        if values[name] < 1:
            raise ValueError(f"{name} must be positive, got {values[name]}")
    for name in ("patches_per_image", "max_images", "checkpoint_every"):
        if values[name] is not None and values[name] < 1:
            raise ValueError(f"{name} must be positive, got {values[name]}")
    if num_workers < 0:
        raise ValueError(f"num_workers must not be negative, got {num_workers}")
    if needs_out:
        raise ValueError("checkpoint_every and resume need out: the checkpoint lives beside it")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")


@dataclass
class _Run:
    """What one build holds while it runs (every rank has one; only rank 0's k-means is fed)."""

    context: DistContext
    settings: dict[str, Any]
    shape: BuildShape
    kmeans: KMeansStream
    stats: BuildStats
    # The checkpoint file (None: no ``out``, so no checkpoints).
    checkpoint: Path | None
    # Rounds of the stream consumed (one chunk per rank each).
    rounds: int = 0
    # What identifies the images streamed (rank 0, with a checkpoint; see vwt.vocab.data.source_fingerprint).
    source: dict[str, Any] | None = None


def _start_main(run: _Run, out: str | os.PathLike | None, overwrite: bool, resume: bool,
                source: Callable[[], dict[str, Any] | None]) -> int:
    """Rank 0's checks before any data is read; the rounds a resumed checkpoint has done (else 0).

    Checking ``out`` also removes, under its lock, what a killed build left (checkpoint temporaries included).
    """
    ckpt = run.checkpoint
    if out is not None:  # checked again, under the lock, when writing
        check_output(out, overwrite=overwrite, contents=VOCABULARY_CONTENTS)
    if ckpt is not None:
        run.source = source()
    if ckpt is None or not ckpt.exists():
        if resume:
            logger.info("no checkpoint at %s: starting from the beginning", ckpt)
        return 0
    if not resume:
        raise FileExistsError(f"{ckpt} holds an interrupted build: pass resume=True (--resume) to continue it, "
                              "or delete it to start over")
    rounds, counts = restore_build(ckpt, run.settings, run.source, run.shape, run.kmeans)
    run.stats.num_images, run.stats.num_patches, run.stats.num_skipped = (counts[key] for key in COUNT_FIELDS)
    return rounds


def _start(run: _Run, out: str | os.PathLike | None, overwrite: bool, resume: bool,
           source: Callable[[], dict[str, Any] | None]) -> int:
    """Rank 0's start (:func:`_start_main`), its failure raised on every rank; the rounds to skip, on every rank."""
    context, rounds, error = run.context, 0, None
    if context.is_main:
        try:
            rounds = _start_main(run, out, overwrite, resume, source)
        except Exception as err:  # noqa: BLE001 - raised on every rank below
            error = err
    if not agree(context, error is None):
        raise error or RuntimeError("rank 0 could not start the build (see its log)")
    return int(broadcast_array(context, np.array([rounds]), (1,), np.int64)[0])


def _stream(run: _Run, results: Iterator[ChunkResult], checkpoint_every: int | None, bar: Any) -> None:
    """Feed every round's patches to k-means (rank 0), count, save checkpoints when due, asked to stop, or when a
    decoding worker died (the state in this process is intact: nothing is lost)."""
    with bar, deferred_interrupts(run.checkpoint is not None) as stop:
        since_checkpoint = 0
        try:
            for patches, counts, stopping, skipped in iter_rounds(run.context, results, stop):
                since_checkpoint += _add_round(run, patches, counts, skipped, bar)
                due = checkpoint_every is not None and since_checkpoint >= checkpoint_every
                if run.checkpoint is not None and run.context.is_main and (due or stopping):
                    save_build(run.checkpoint, run.settings, run.source, run.kmeans, run.stats.counts(), run.rounds)
                    since_checkpoint = 0
                if stopping:
                    raise KeyboardInterrupt(f"interrupted; checkpoint saved at {run.checkpoint}")
        except WorkerDiedError as err:
            if run.checkpoint is None:
                raise WorkerDiedError(f"{err}; nothing was saved (a checkpoint needs out)") from None
            if run.context.is_main:
                save_build(run.checkpoint, run.settings, run.source, run.kmeans, run.stats.counts(), run.rounds)
            raise WorkerDiedError(f"{err}; checkpoint saved at {run.checkpoint} after {run.stats.num_images} images: "
                                  "rerun the same build with resume=True (--resume) to continue") from None


def _add_round(run: _Run, patches: list[np.ndarray], counts: np.ndarray, skipped: list[tuple[str, str]],
               bar: Any) -> int:
    """Feed one round to k-means and the counts; return the images it read (skipped ones included)."""
    stats = run.stats
    for name, reason in skipped:
        logger.warning("skipping image %s: %s", name, reason)
        stats.skipped.append(name)
    for array in patches:
        run.kmeans.add(array)
    images, num_skipped, num_patches = (int(v) for v in counts.sum(axis=0))
    stats.num_images += images
    stats.num_skipped += num_skipped
    stats.num_patches += num_patches
    run.rounds += 1
    bar.update(images + num_skipped)
    bar.set_postfix(patches=stats.num_patches, skipped=stats.num_skipped)
    return images + num_skipped


def _finish(run: _Run, data: Any) -> np.ndarray:
    """The ``[k, dim]`` centroids on every rank (k-means fits its leftover patches on rank 0)."""
    context, stats, k = run.context, run.stats, run.kmeans.k
    centroids = run.kmeans.finish() if context.is_main else None
    if not agree(context, centroids is not None or not context.is_main):
        raise ValueError(
            f"not enough patches to learn {k} words: {stats.num_patches} patches from {stats.num_images} "
            f"images ({stats.num_skipped} skipped) in {describe_source(data)!r}"
        )
    return broadcast_array(context, centroids, (k, run.shape.dim), np.float32)


def _write(run: _Run, vocab: VisualVocabulary, out: str | os.PathLike | None, overwrite: bool) -> None:
    """Rank 0 writes ``out`` atomically and deletes the checkpoint; the other ranks wait for it."""
    if out is not None and run.context.is_main:
        with atomic_directory(out, overwrite=overwrite, contents=VOCABULARY_CONTENTS) as tmp:
            vocab.save_pretrained(tmp)
        if run.checkpoint is not None:
            run.checkpoint.unlink(missing_ok=True)
    agree(run.context, True)  # the other ranks return once rank 0 has written
