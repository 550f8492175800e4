"""Interleaved timing: every round runs every method once, in turn, so machine noise hits all alike.

Round ``r`` runs the batches in order and, for each batch, every method, starting at method ``r mod M``
(the order rotates so no method always runs right after another). A method's time in a round is the sum
over the round's batches; reported figures are medians over rounds, and ratios are medians of the
per-round ratios (paired: a slow round slows base and method alike).

Every call is timed twice: wall time (``time.perf_counter``) and the calling thread's CPU time
(``time.thread_time``). With ``torch.set_num_threads(1)`` the CPU work runs on the calling thread, so
its CPU time is what the call itself cost, whatever else the (shared) machine runs meanwhile.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .energy import EnergyMeter

__all__ = ["RoundTimes", "synchronize", "interleaved_rounds", "paired_median_ratio"]


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (a no-op on CPU), so a timer brackets the work itself."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class RoundTimes:
    """What the timed rounds measured, per method label."""

    # Wall seconds per round (summed over the round's batches).
    seconds: dict[str, list[float]] = field(default_factory=dict)
    # Joules per round, or None per round where no energy counter is readable.
    joules: dict[str, list[float | None]] = field(default_factory=dict)
    # Images processed per round (the batches' sizes summed; images may repeat to fill a batch).
    images_per_round: int = 0
    # Thread CPU seconds per round (``time.thread_time``; the work itself with one intra-op thread).
    cpu_seconds: dict[str, list[float]] = field(default_factory=dict)

    def seconds_per_image(self, label: str) -> float:
        """Median over rounds of the mean seconds per image."""
        return statistics.median(self.seconds[label]) / self.images_per_round

    def cpu_seconds_per_image(self, label: str) -> float:
        """Median over rounds of the mean thread CPU seconds per image."""
        return statistics.median(self.cpu_seconds[label]) / self.images_per_round

    def joules_per_image(self, label: str) -> float | None:
        values = self.joules.get(label, [])
        if not values or any(v is None for v in values):
            return None
        return statistics.median(values) / self.images_per_round


def paired_median_ratio(numerator: Sequence[float | None], denominator: Sequence[float | None]) -> float | None:
    """``median(numerator[r] / denominator[r])`` over rounds; ``None`` where a value is missing or zero."""
    pairs = [(a, b) for a, b in zip(numerator, denominator) if a is not None and b]
    if not pairs or len(pairs) != len(numerator):
        return None
    return statistics.median(a / b for a, b in pairs)


def interleaved_rounds(calls: Mapping[str, Callable[[torch.Tensor], Any]], batches: Sequence[torch.Tensor], *,
                       repeats: int, warmup: int = 0, device: torch.device | str = "cpu",
                       energy: EnergyMeter | None = None, progress: Any = None) -> RoundTimes:
    """Time ``calls`` (label -> function of a batch) over ``batches``, interleaved, after ``warmup`` rounds.

    Args:
        calls: the functions to compare, e.g. bound methods.
        batches: the inputs of one round, already on ``device``.
        repeats: timed rounds.
        warmup: untimed rounds first.
        device: synchronized around every call.
        energy: read around every timed call where given and available.
        progress: a tqdm bar, advanced by one per call.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    labels = list(calls)
    result = RoundTimes({label: [] for label in labels}, {label: [] for label in labels},
                        sum(len(b) for b in batches), {label: [] for label in labels})
    measure_energy = energy is not None and energy.available
    for index in range(warmup + repeats):
        timed = index >= warmup
        shift = index % len(labels)
        order = labels[shift:] + labels[:shift]
        seconds = dict.fromkeys(labels, 0.0)
        cpu = dict.fromkeys(labels, 0.0)
        joules: dict[str, float | None] = dict.fromkeys(labels, 0.0 if measure_energy else None)
        for batch in batches:
            for label in order:
                synchronize(device)
                before = energy.read() if timed and measure_energy else None
                start, start_cpu = time.perf_counter(), time.thread_time()
                calls[label](batch)
                synchronize(device)
                seconds[label] += time.perf_counter() - start
                cpu[label] += time.thread_time() - start_cpu
                if before is not None:
                    after = energy.read()
                    delta = energy.delta(before, after) if after is not None else None
                    joules[label] = None if delta is None or joules[label] is None else joules[label] + delta
                if progress is not None:
                    progress.update(1)
        if timed:
            for label in labels:
                result.seconds[label].append(seconds[label])
                result.cpu_seconds[label].append(cpu[label])
                result.joules[label].append(joules[label])
    return result
