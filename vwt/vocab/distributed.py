"""Multi-process builds under ``torchrun``: every rank decodes its share, rank 0 runs k-means on the gathered patches.

Patches travel over a gloo process group (CPU tensors; k-means is CPU work whatever the accelerator), so
the same code runs on one machine (``torchrun --nproc-per-node N``) and on many (``--nnodes``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["DistContext", "init_distributed", "close_distributed", "gather_round", "agree", "broadcast_array"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; ``world_size == 1`` outside ``torchrun``."""

    rank: int = 0
    world_size: int = 1
    # The gloo group the build talks over (None: the default group, or no job).
    group: Any = None
    # Whether this build created the default process group (and so destroys it).
    created: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistContext:
    """Join the ``torchrun`` job of the environment (``WORLD_SIZE`` > 1) with a gloo group, or run alone."""
    import torch.distributed as dist

    if not dist.is_available() or (int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not dist.is_initialized()):
        return DistContext()
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
        created = True
    group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    context = DistContext(dist.get_rank(), dist.get_world_size(), group, created)
    logger.info("distributed build: rank %d of %d", context.rank, context.world_size)
    return context


def close_distributed(context: DistContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if context.created:
        import torch.distributed as dist

        dist.destroy_process_group()


def agree(context: DistContext, ok: bool) -> bool:
    """Whether ``ok`` holds on every rank (a collective: every rank must call it)."""
    if context.world_size == 1:
        return ok
    import torch.distributed as dist

    flag = torch.tensor([int(ok)], dtype=torch.int64)
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
    dist.all_gather(headers, header, group=context.group)
    table = torch.stack(headers).numpy()  # [W, 2 + len(counts)]
    rows, dim = int(table[:, 0].max()), int(table[:, 1].max())
    if rows == 0:
        return [], table[:, 2:]
    padded = torch.zeros(rows, dim, dtype=torch.float32)
    if len(patches):
        padded[: len(patches)] = torch.from_numpy(patches)
    gathered = [torch.empty_like(padded) for _ in range(context.world_size)] if context.is_main else None
    dist.gather(padded, gathered, dst=0, group=context.group)
    if not context.is_main:
        return [], table[:, 2:]
    return [g[:n].numpy() for g, n in zip(gathered, table[:, 0])], table[:, 2:]
