"""Benchmark and accuracy harness: every method on one model, measured side by side.

Timing (interleaved medians after warm-up), FLOPs, energy where a counter is readable, peak memory,
tokens, fidelity to base, and accuracy retention (Fashion-MNIST linear probe, CLIP zero-shot). The
command line is ``vwt-bench`` (:mod:`vwt.cli_bench`).

Example::

    from vwt import methods
    from vwt.bench import run_benchmark

    results = run_benchmark(model, [methods.load("base"), methods.load("tome", r=13)], pixel_values,
                            batch_sizes=(1, 8), repeats=3)
"""

from .accuracy import linear_probe, zero_shot_accuracy
from .energy import EnergyMeter, open_energy_meter
from .flops import count_flops
from .harness import BoundMethods, bind_methods, make_batches, run_benchmark
from .memory import PeakMemory
from .models import BenchModel, clip_b16_random, load_bench_model
from .report import summary_table, write_csv, write_json
from .specs import parse_method_spec, parse_method_specs

__all__ = [
    "BenchModel",
    "BoundMethods",
    "EnergyMeter",
    "PeakMemory",
    "bind_methods",
    "clip_b16_random",
    "count_flops",
    "linear_probe",
    "load_bench_model",
    "make_batches",
    "open_energy_meter",
    "parse_method_spec",
    "parse_method_specs",
    "run_benchmark",
    "summary_table",
    "write_csv",
    "write_json",
    "zero_shot_accuracy",
]
