"""Peak memory of one call, above what was in use before it.

Two figures per call:

- **tensor peak** (``peak_memory_mb``): the most tensor memory alive at once during the call, counting
  only what the call allocated. On CUDA ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats`` minus the allocation before. On CPU, where torch keeps no allocator
  statistics (and ``tracemalloc`` does not see its allocations), a ``TorchDispatchMode`` adds up the
  storages of every op's outputs and subtracts them when they are freed (a weak reference on each
  storage): the CPU analogue of ``max_memory_allocated``.
- **resident-set peak** (``peak_rss_mb``, CPU): on Linux the process's ``VmHWM`` reset by writing ``5``
  to ``/proc/self/clear_refs`` before the call, minus ``VmRSS`` before; elsewhere the
  ``resource.getrusage`` ``ru_maxrss`` delta (a process-wide high-water mark: a call under an earlier
  peak reads 0). Either way, memory the allocator kept from earlier calls is reused without raising the
  resident set, so this understates a call's needs; it is recorded, not ranked on. (``psutil`` has no
  resettable peak on Linux.)
"""

from __future__ import annotations

import logging
import resource
import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["PeakMemory", "TensorMemoryTracker"]

logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


class TensorMemoryTracker(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created by ops inside the mode.

    Example::

        with TensorMemoryTracker() as tracker:
            model(pixel_values)
        tracker.peak  # bytes
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._refs.pop(key, None)

    @staticmethod
    def _storage(tensor: Any) -> Any:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return None
        try:
            return tensor.untyped_storage()
        except (RuntimeError, NotImplementedError):  # e.g. quantized or sparse tensors without one
            return None

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # views, in-place and out= results share an input's storage: not a new allocation
        inputs = {s.data_ptr() for s in map(self._storage, tree_leaves((args, kwargs))) if s is not None}
        for tensor in tree_leaves(out):
            storage = self._storage(tensor)
            if storage is None or storage.data_ptr() in inputs:
                continue
            key = id(storage)
            if key in self._refs:
                continue
            nbytes = storage.nbytes()
            self._refs[key] = weakref.ref(storage, lambda _ref, key=key, nbytes=nbytes: self._free(key, nbytes))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _can_reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        _status_kb("VmHWM")
        return True
    except (OSError, KeyError, ValueError):
        return False


class PeakMemory:
    """Measures the peak memory a call adds; :attr:`source` and :attr:`rss_source` say how."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":
            self.source = "torch.cuda.max_memory_allocated (peak minus allocated before the call)"
            self.rss_source = None
        else:
            self.source = "live tensor storages tracked by a TorchDispatchMode (CPU analogue of max_memory_allocated)"
            if _can_reset_hwm():
                self.rss_source = "linux VmHWM reset via /proc/self/clear_refs, minus VmRSS before the call"
            else:
                self.rss_source = "resource.getrusage ru_maxrss delta (process-wide high-water mark)"

    def _rss(self) -> int:
        if self.rss_source.startswith("linux"):
            return _status_kb("VmRSS") * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, int, int | None]:
        """``(fn(), tensor peak bytes, resident-set peak bytes or None)``, both above the use before the call."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            result = fn()
            torch.cuda.synchronize(self.device)
            return result, torch.cuda.max_memory_allocated(self.device) - before, None
        if self.rss_source.startswith("linux"):
            _CLEAR_REFS.write_text("5")
        rss_before = self._rss()
        with TensorMemoryTracker() as tracker:
            result = fn()
        rss_peak = _status_kb("VmHWM") * 1024 if self.rss_source.startswith("linux") else self._rss()
        return result, tracker.peak, max(0, rss_peak - rss_before)
