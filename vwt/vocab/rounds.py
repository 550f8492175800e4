"""The rounds of a build: one chunk per rank, gathered to rank 0, with a stop request and failures agreed by all.

A round is the unit everything else counts in: k-means takes a round's patches in stream order, a
checkpoint records the rounds done, a stop (SIGINT/SIGTERM) and a dead decoding worker are honoured
between rounds, on every rank at once, so that the state rank 0 holds is always that of whole rounds.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np

from .decode import ChunkResult
from .distributed import DistContext, gather_round

__all__ = ["StopRequest", "WorkerDiedError", "deferred_interrupts", "iter_rounds"]

logger = logging.getLogger(__name__)


@dataclass
class StopRequest:
    """Set by SIGINT/SIGTERM while :func:`deferred_interrupts` is active; honoured between rounds."""

    requested: bool = False


@contextlib.contextmanager
def deferred_interrupts(enabled: bool) -> Iterator[StopRequest]:
    """While the body runs, SIGINT/SIGTERM only request a stop, honoured between chunks (a second SIGINT stops now).

    k-means is never interrupted halfway through a ``partial_fit``, so the saved state is consistent.
    """
    stop = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.requested = True
        logger.warning("%s: saving a checkpoint after the current chunk (Ctrl-C again to stop at once)",
                       signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class WorkerDiedError(RuntimeError):
    """A decoding worker process died (killed, out of memory): the build stops, after saving a checkpoint."""


def iter_rounds(context: DistContext, results: Iterator[ChunkResult], stop: StopRequest
            ) -> Iterator[tuple[list[np.ndarray], np.ndarray, bool, list[tuple[str, str]]]]:
    """Per round (one chunk per rank): ``(patches in stream order (rank 0), [W, 3] images/skipped/patches counts,
    stop requested anywhere, this rank's skipped images)``, until every rank's share is exhausted.

    Raises:
        WorkerDiedError: on every rank, before the round is used, if a decoding worker died on any rank.
    """
    while True:
        died = ""
        try:
            result = next(results, None)
        except BrokenProcessPool as err:
            result, died = None, f"{type(err).__name__}: {err}"
        empty = np.zeros((0, 0), dtype=np.float32)
        patches = empty if result is None or not result.num_images else result.patches
        counts = (0, 0, 0) if result is None else (result.num_images, len(result.skipped), len(patches))
        flags = (int(result is None and not died), int(stop.requested), int(bool(died)))
        gathered, table = gather_round(context, patches, (*counts, *flags))
        if table[:, 5].any():
            ranks = ", ".join(str(r) for r in np.flatnonzero(table[:, 5]))
            raise WorkerDiedError(f"a decoding worker process died on rank {ranks} (killed, or out of memory?)"
                                  + (f": {died}" if died else ""))
        if table[:, 3].all():  # every rank exhausted
            return
        yield gathered, table[:, :3], bool(table[:, 4].any()), [] if result is None else result.skipped
