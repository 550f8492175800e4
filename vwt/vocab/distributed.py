"""Multi-process builds under ``torchrun``: every rank decodes its share, rank 0 runs k-means on the gathered patches.

Patches travel over a gloo process group (CPU tensors; k-means is CPU work whatever the accelerator), so
the same code runs on one machine (``torchrun --nproc-per-node N``) and on many (``--nnodes``).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_TIMEOUT", "DistContext", "DistributedError", "agree", "broadcast_array", "check_same_settings",
           "close_distributed", "gather_round", "init_distributed"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
"""Seconds a rank waits for the others in one collective before the build fails (torch's own default is 30 min).

It must cover the longest step one rank takes alone while the others wait: rank 0's k-means++ seeding
(which grows with k), a checkpoint, writing the vocabulary.
"""


class DistributedError(RuntimeError):
    """A collective of a ``torchrun`` build failed: another rank stalled (past the timeout) or died."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; ``world_size == 1`` outside ``torchrun``."""

    rank: int = 0
    world_size: int = 1
    # The gloo group the build talks over (None: the default group, or no job).
    group: Any = None
    # Whether this build created the default process group (and so destroys it).
    created: bool = False
    # Seconds a collective waits for the other ranks.
    timeout: float = DEFAULT_TIMEOUT

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (which runs k-means and writes)."""
        return self.rank == 0


def init_distributed(timeout: float = DEFAULT_TIMEOUT) -> DistContext:
    """Join the ``torchrun`` job of the environment (``WORLD_SIZE`` > 1) with a gloo group, or run alone.

    Every collective of the build waits at most ``timeout`` seconds for the other ranks, then raises
    :class:`DistributedError` (a process group created by the caller gets a gloo subgroup with this timeout).
    """
    import torch.distributed as dist

    if not dist.is_available() or (int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not dist.is_initialized()):
        return DistContext()
    if not timeout > 0:
        raise ValueError(f"the distributed timeout must be positive, got {timeout}")
    wait = datetime.timedelta(seconds=timeout)
    rank = os.environ.get("RANK", "?")
    with _collective(rank, timeout, "joining the process group"):
        created = not dist.is_initialized()
        if created:
            dist.init_process_group(backend="gloo", timeout=wait)
        group = None if created and dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=wait)
    context = DistContext(dist.get_rank(), dist.get_world_size(), group, created, timeout)
    logger.info("distributed build: rank %d of %d", context.rank, context.world_size)
    return context


def close_distributed(context: DistContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it (or the subgroup it made)."""
    import torch.distributed as dist

    if context.created:
        dist.destroy_process_group()
    elif context.group is not None:
        dist.destroy_process_group(context.group)


@contextlib.contextmanager
def _collective(rank: int | str, timeout: float, what: str) -> Iterator[None]:
    """Turn gloo's timeout or closed-connection error into one clear :class:`DistributedError`."""
    try:
        yield
    except RuntimeError as err:  # gloo's DistBackendError / DistStoreError are RuntimeErrors
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedError(
            f"rank {rank}: {what} failed: another torchrun rank stalled or died (no answer within "
            f"--dist-timeout {timeout:g} s, or its connection closed), so every rank stops; rerun (with --resume "
            f"to continue from the last checkpoint). ({detail})"
        ) from err


def _digest(value: Any) -> int:
    """A 63-bit hash of a JSON-serialisable value, the same in every process."""
    text = json.dumps(value, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") >> 1


def check_same_settings(context: DistContext, settings: dict[str, Any]) -> None:
    """Raise ``ValueError`` on every rank if the ranks' ``settings`` differ, naming the settings that do.

    A collective: every rank must call it (with the same keys). Each setting's hash is all-gathered.
    """
    if context.world_size == 1:
        return
    import torch.distributed as dist

    keys = sorted(settings)
    local = torch.tensor([_digest(settings[key]) for key in keys], dtype=torch.int64)
    table = [torch.empty_like(local) for _ in range(context.world_size)]
    with _collective(context.rank, context.timeout, "comparing the ranks' settings"):
        dist.all_gather(table, local, group=context.group)
    hashes = torch.stack(table)  # [W, S]
    differ = [key for key, column in zip(keys, hashes.T) if bool((column != column[0]).any())]
    if differ:
        mine = ", ".join(f"{key}={settings[key]!r}" for key in differ)
        raise ValueError(f"the torchrun ranks were given different settings: {', '.join(differ)} differ "
                         f"(rank {context.rank} has {mine}); give every rank the same arguments")


def agree(context: DistContext, ok: bool) -> bool:
    """Whether ``ok`` holds on every rank (a collective: every rank must call it)."""
    if context.world_size == 1:
        return ok
    import torch.distributed as dist

    flag = torch.tensor([int(ok)], dtype=torch.int64)
    with _collective(context.rank, context.timeout, "waiting for the other ranks"):
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=context.group)
    return bool(flag[0])


def broadcast_array(context: DistContext, array: np.ndarray | None, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Rank 0's ``array`` (of ``shape`` and ``dtype``) on every rank."""
    if context.world_size == 1:
        assert array is not None
        return array
    import torch.distributed as dist

    local = np.ascontiguousarray(array, dtype=dtype) if context.is_main else np.empty(shape, dtype=dtype)
    tensor = torch.from_numpy(local)
    with _collective(context.rank, context.timeout, "receiving from rank 0"):
        dist.broadcast(tensor, src=0, group=context.group)
    return tensor.numpy()


def gather_round(
    context: DistContext, patches: np.ndarray, counts: tuple[int, ...]
) -> tuple[list[np.ndarray], np.ndarray]:
    """One round: every rank's ``[n_r, D]`` float32 patches to rank 0, and every rank's ``counts`` to all.

    Returns:
        ``(patches of ranks 0..W-1`` (on rank 0; empty elsewhere), ``[W, len(counts)]`` int64 counts).
    """
    if context.world_size == 1:
        return [patches], np.asarray([counts], dtype=np.int64)
    import torch.distributed as dist

    header = torch.tensor([len(patches), patches.shape[1] if patches.ndim == 2 else 0, *counts], dtype=torch.int64)
    headers = [torch.empty_like(header) for _ in range(context.world_size)]
    with _collective(context.rank, context.timeout, "gathering a round of patches"):
        dist.all_gather(headers, header, group=context.group)
    table = torch.stack(headers).numpy()  # [W, 2 + len(counts)]
    rows, dim = int(table[:, 0].max()), int(table[:, 1].max())
    if rows == 0:
        return [], table[:, 2:]
    padded = torch.zeros(rows, dim, dtype=torch.float32)
    if len(patches):
        padded[: len(patches)] = torch.from_numpy(patches)
    gathered = [torch.empty_like(padded) for _ in range(context.world_size)] if context.is_main else None
    with _collective(context.rank, context.timeout, "gathering a round of patches"):
        dist.gather(padded, gathered, dst=0, group=context.group)
    if not context.is_main:
        return [], table[:, 2:]
    return [g[:n].numpy() for g, n in zip(gathered, table[:, 0])], table[:, 2:]
