"""Benchmark and accuracy harness: every method on one model, measured side by side.

Timing (interleaved medians after warm-up), FLOPs, energy where a counter is readable, peak memory,
tokens, fidelity to base, and accuracy retention (Fashion-MNIST linear probe, CLIP zero-shot). The
command line is ``vwt-bench`` (:mod:`vwt.cli.bench`).

Example::

    from vwt import methods
    from vwt.bench import run_benchmark

    results = run_benchmark(model, [methods.load("base"), methods.load("tome", r=13)], pixel_values,
                            batch_sizes=(1, 8), repeats=3)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .accuracy import linear_probe, zero_shot_accuracy
    from .energy import EnergyMeter, open_energy_meter
    from .flops import count_flops
    from .harness import BoundMethods, bind_methods, make_batches, run_benchmark
    from .memory import PeakMemory
    from .models import BenchModel, clip_b16_random, load_bench_model
    from .report import summary_table, write_csv, write_json
    from .specs import parse_method_spec, parse_method_specs

_LAZY = {
    "linear_probe": ".accuracy",
    "zero_shot_accuracy": ".accuracy",
    "EnergyMeter": ".energy",
    "open_energy_meter": ".energy",
    "count_flops": ".flops",
    "BoundMethods": ".harness",
    "bind_methods": ".harness",
    "make_batches": ".harness",
    "run_benchmark": ".harness",
    "PeakMemory": ".memory",
    "BenchModel": ".models",
    "clip_b16_random": ".models",
    "load_bench_model": ".models",
    "summary_table": ".report",
    "write_csv": ".report",
    "write_json": ".report",
    "parse_method_spec": ".specs",
    "parse_method_specs": ".specs",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
