"""The build's stream of chunks: this process's share of the images, decoded in worker processes, in order.

A chunk is ``images_per_chunk`` consecutive records of the stream (after ``max_images``), numbered
from 0. Under ``torchrun`` with ``W`` processes, rank ``r`` handles chunks ``r, r + W, r + 2W, ...``
(a file split for folders and in-memory sources) or, for a ``datasets`` hub id, its node's share from
``datasets.distributed.split_dataset_by_node``; its ``i``-th chunk has the global number ``i * W + r``.
Chunks are decoded by a pool of worker processes with a bounded window of chunks in flight and come
back in stream order whatever the pool's size.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import multiprocessing
import os
import signal
from collections.abc import Iterable, Iterator
from typing import Any

from .data import ImageRecord, is_dataset_id, iter_images
from .decode import ChunkJob, ChunkResult, process_chunk

__all__ = ["default_num_workers", "iter_chunks", "map_chunks"]

MAX_DEFAULT_WORKERS = 8


def default_num_workers() -> int:
    """Decoding processes by default: the CPUs this process may use, at most 8; 0 (decode inline) on one CPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cpus = os.cpu_count() or 1
    return 0 if cpus <= 1 else min(cpus, MAX_DEFAULT_WORKERS)


def _chunked(records: Iterable[ImageRecord], size: int) -> Iterator[list[ImageRecord]]:
    iterator = iter(records)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def iter_chunks(
    data: Any,
    split: str = "train",
    *,
    images_per_chunk: int = 16,
    max_images: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
    dataset_kwargs: dict[str, Any] | None = None,
) -> Iterator[tuple[int, list[ImageRecord]]]:
    """``(global chunk number, records)`` of this rank's share of the stream, from its ``start``-th chunk on.

    Records are not decoded (``iter_images(..., decode=False)``); skipping ``start`` chunks to resume a
    build costs no decoding.
    """
    kwargs = dict(dataset_kwargs or {})
    if is_dataset_id(data):
        records = iter_images(data, split, decode=False, shard=(rank, world_size), take=max_images, **kwargs)
        local = _chunked(records, images_per_chunk)
    else:
        records = iter_images(data, split, decode=False, **kwargs)
        if max_images is not None:  # never read past the images that will be used
            records = itertools.islice(records, max_images)
        local = itertools.islice(_chunked(records, images_per_chunk), rank, None, world_size)
    for i, chunk in enumerate(itertools.islice(local, start, None), start=start):
        yield i * world_size + rank, chunk


def _ignore_sigint() -> None:
    """Worker initializer: the main process alone handles Ctrl-C (and saves a checkpoint); one thread each."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def map_chunks(
    job: ChunkJob, chunks: Iterable[tuple[int, list[ImageRecord]]], num_workers: int = 0, prefetch: int = 2
) -> Iterator[ChunkResult]:
    """:func:`vwt.vocab.decode.process_chunk` over ``chunks``, in order, on ``num_workers`` processes (0: inline).

    At most ``prefetch * num_workers`` chunks are in flight, so a stream of any length uses bounded
    memory. Worker processes are spawned (no fork of a threaded parent) and ignore SIGINT.
    """
    if num_workers <= 0:
        for index, records in chunks:
            yield process_chunk(job, index, records)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context, initializer=_ignore_sigint) as pool:
        window: collections.deque[concurrent.futures.Future[ChunkResult]] = collections.deque()
        submit = functools.partial(pool.submit, process_chunk, job)
        chunks = iter(chunks)
        try:
            for index, records in itertools.islice(chunks, prefetch * num_workers):
                window.append(submit(index, records))
            while window:
                result = window.popleft().result()
                for index, records in itertools.islice(chunks, 1):
                    window.append(submit(index, records))
                yield result
        finally:
            for future in window:
                future.cancel()
