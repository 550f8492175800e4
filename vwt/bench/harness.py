"""Run every method on the same images and measure them side by side.

Per batch size ``B`` the images are cut into batches of ``B`` (cycling through them to fill the last
batch). The first round is the **measurement round**: one call per method and batch, counting FLOPs,
peak memory, tokens and the pooled output (for fidelity against base). Then ``warmup - 1`` untimed
rounds and ``repeats`` timed rounds, interleaved (see :mod:`vwt.bench.timing`). Every ratio against
base comes from this one run.
"""

from __future__ import annotations

import logging
import math
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..methods.registry import Method, Runner, load
from ..version import __version__
from .energy import EnergyMeter, open_energy_meter
from .features import cosine_to_reference, feature_name, pooled_features
from .flops import count_flops
from .memory import PeakMemory
from .specs import format_method_spec, output_key, unique_labels
from .timing import RoundTimes, interleaved_rounds, paired_median_ratio

__all__ = ["SCHEMA", "BoundMethods", "bind_methods", "make_batches", "run_benchmark"]

logger = logging.getLogger(__name__)

SCHEMA = "vwt-bench/1"
_MB = 2**20


def make_batches(num_images: int, batch_size: int) -> list[torch.Tensor]:
    """Index batches covering every image once, the last filled by cycling back to the first images."""
    count = math.ceil(num_images / batch_size) * batch_size
    return list((torch.arange(count) % num_images).split(batch_size))


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def _environment(device: torch.device) -> dict[str, Any]:
    import transformers


    env = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "transformers": transformers.__version__, "vwt": __version__, "torch_threads": torch.get_num_threads(),
           "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


@dataclass
class BoundMethods:
    """Methods bound to one model, labelled, base first; a method whose optional dependency is missing is
    kept in ``skipped`` with the reason."""

    methods: list[Method]
    labels: list[str]
    runners: dict[str, Runner]
    skipped: dict[str, str]
    base: str

    def same_outputs(self) -> dict[str, str]:
        """Label -> the first label whose method differs from it only in batching (same outputs)."""
        first: dict[Any, str] = {}
        return {label: first.setdefault(output_key(m), label) for label, m in zip(self.labels, self.methods)}


def bind_methods(model: nn.Module, methods: Sequence[Method]) -> BoundMethods:
    """Bind ``methods`` to ``model`` (on its device), adding ``base`` first when it is missing."""
    methods = list(methods)
    if not any(m.name == "base" and not m.options for m in methods):
        methods.insert(0, load("base"))
    labels = unique_labels(methods)
    base = labels[next(i for i, m in enumerate(methods) if m.name == "base" and not m.options)]
    runners, skipped = {}, {}
    for label, method in zip(labels, methods):
        try:
            runners[label] = method.bind(model)
        except ImportError as err:
            missing = err if isinstance(err, ModuleNotFoundError) else err.__cause__
            if not isinstance(missing, ModuleNotFoundError) or (missing.name or "").startswith("vwt"):
                raise  # a broken import of our own, not a missing optional dependency
            logger.warning("skipping %s: %s", label, err)
            skipped[label] = f"{type(err).__name__}: {err}"
    return BoundMethods(methods, labels, runners, skipped, base)


def _measure_round(runners: dict[str, Runner], batches: list[torch.Tensor], indices: list[torch.Tensor],
                   memory: PeakMemory, num_images: int, progress: Any) -> dict[str, dict[str, Any]]:
    """One call per method and batch: FLOPs, peak memory, tokens, pooled outputs."""
    out: dict[str, dict[str, Any]] = {}
    for label, runner in runners.items():
        flops = images = peak = 0
        rss: int | None = 0
        layer_tokens = 0.0
        tokens = torch.zeros(num_images, dtype=torch.long)
        features: list[torch.Tensor | None] = [None] * num_images
        field = None
        for x, index in zip(batches, indices):
            (result, count), used, rss_used = memory.measure(lambda: count_flops(lambda: runner(x)))
            flops, images, peak = flops + count, images + len(x), max(peak, used)
            rss = max(rss, rss_used) if rss is not None and rss_used is not None else None
            layer_tokens += statistics.fmean(result.tokens_per_layer) * len(x)
            pooled = pooled_features(result.outputs)
            field = feature_name(result.outputs)
            for row, image in enumerate(index.tolist()):
                if features[image] is None:
                    features[image] = pooled[row]
                    tokens[image] = int(result.sequence_lengths[row])
            if progress is not None:
                progress.update(1)
        out[label] = {"flops_per_image": flops / images, "peak_memory_bytes": peak, "peak_rss_bytes": rss,
                      "tokens_per_layer_mean": layer_tokens / images, "tokens_per_image": tokens,
                      "features": torch.stack(features), "feature": field}
    return out


def _batch_entry(label: str, base: str, measured: dict[str, dict[str, Any]], times: RoundTimes,
                 batch_size: int, num_batches: int, flops_from: str | None) -> dict[str, Any]:
    m, b = measured[label], measured[base]
    flops = measured[flops_from]["flops_per_image"] if flops_from else m["flops_per_image"]
    seconds = times.seconds_per_image(label)
    joules = times.joules_per_image(label)
    peak = m["peak_memory_bytes"]
    return {
        "batch_size": batch_size,
        "images_per_round": times.images_per_round,
        "seconds_per_image": seconds,
        "latency_ms": statistics.median(times.seconds[label]) / num_batches * 1e3,
        "images_per_s": 1.0 / seconds,
        "speedup_vs_base": paired_median_ratio(times.seconds[base], times.seconds[label]),
        "time_ratio_vs_base": paired_median_ratio(times.seconds[label], times.seconds[base]),
        "flops_per_image": flops,
        "flops_ratio_vs_base": _ratio(flops, b["flops_per_image"]),
        "energy_j_per_image": joules,
        "energy_ratio_vs_base": paired_median_ratio(times.joules[label], times.joules[base]) if joules else None,
        "peak_memory_mb": peak / _MB,
        "memory_ratio_vs_base": _ratio(peak, b["peak_memory_bytes"]),
        "peak_rss_mb": None if m["peak_rss_bytes"] is None else m["peak_rss_bytes"] / _MB,
        "tokens_per_layer_mean": m["tokens_per_layer_mean"],
        "round_seconds": list(times.seconds[label]),
    }


def run_benchmark(model: nn.Module, methods: Sequence[Method] | BoundMethods, pixel_values: torch.Tensor, *,
                  batch_sizes: Sequence[int] = (1, 8, 32), repeats: int = 3, warmup: int = 1,
                  energy: EnergyMeter | None = None, progress: bool = True) -> dict[str, Any]:
    """Benchmark ``methods`` on ``model`` (on its device) over ``pixel_values`` ``[N, C, H, W]``; a JSON-ready dict.

    ``base`` is added first when missing: every ratio is against it, measured in the same rounds.
    ``warmup`` is at least 1 (the measurement round). See :mod:`vwt.bench.report` for the fields.
    """
    if warmup < 1:
        raise ValueError("warmup must be at least 1: the first round measures FLOPs, memory and tokens")
    device = next(model.parameters()).device
    bound = methods if isinstance(methods, BoundMethods) else bind_methods(model.eval(), methods)
    methods, labels, runners, base = bound.methods, bound.labels, bound.runners, bound.base
    meter = energy if energy is not None else open_energy_meter(device)
    memory = PeakMemory(device)
    num_images = len(pixel_values)
    batch_sizes = sorted(set(int(b) for b in batch_sizes))
    # q8's int8 GEMMs are invisible to FlopCounterMode: count its arithmetic on the float model (base).
    flops_from = {label: base for label, m in zip(labels, methods) if m.name == "q8"}
    entries = {label: {"label": label, "method": m.name, "spec": format_method_spec(m),
                       "options": {k: _jsonable(v) for k, v in m.options.items()},
                       "status": "ok" if label in runners else "skipped",
                       "reason": bound.skipped.get(label), "batches": {}}
               for label, m in zip(labels, methods)}
    first: dict[str, dict[str, Any]] | None = None
    with torch.inference_mode():
        for batch_size in batch_sizes:
            indices = make_batches(num_images, batch_size)
            batches = [pixel_values[i].to(device) for i in indices]
            total = (warmup + repeats) * len(batches) * len(runners)
            with tqdm(total=total, desc=f"batch {batch_size}", disable=not progress, leave=False) as bar:
                measured = _measure_round(runners, batches, indices, memory, num_images, bar)
                times = interleaved_rounds(runners, batches, repeats=repeats, warmup=warmup - 1, device=device,
                                           energy=meter, progress=bar)
            first = first or measured
            for label in runners:
                entries[label]["batches"][str(batch_size)] = _batch_entry(
                    label, base, measured, times, batch_size, len(batches), flops_from.get(label))
    base_tokens = first[base]["tokens_per_image"].double()
    for label in runners:
        m = first[label]
        tokens = m["tokens_per_image"].double()
        entries[label]["tokens"] = {
            "per_image_mean": float(tokens.mean()), "per_image_median": float(tokens.quantile(0.5)),
            "per_image_min": int(tokens.min()), "per_image_max": int(tokens.max()),
            "per_layer_mean": m["tokens_per_layer_mean"],
            "ratio_vs_base": float(tokens.mean() / base_tokens.mean()),
            "per_layer_ratio_vs_base": m["tokens_per_layer_mean"] / first[base]["tokens_per_layer_mean"],
            "per_image": tokens.long().tolist(),
        }
        entries[label]["fidelity"] = {"feature": m["feature"], "batch_size": batch_sizes[0],
                                      **{f"cosine_{k}": v for k, v in
                                         cosine_to_reference(m["features"], first[base]["features"]).items()}}
        if label in flops_from:
            entries[label]["flops_note"] = ("int8 kernels are invisible to FlopCounterMode: the count is the float "
                                            "model's (the same multiply-adds, done in int8)")
    return {
        "schema": SCHEMA,
        "base_label": base,
        "settings": {"batch_sizes": batch_sizes, "repeats": repeats, "warmup": warmup, "device": str(device),
                     "num_images": num_images, "input_size": list(pixel_values.shape[-2:])},
        "environment": _environment(device),
        "timing": {"method": "interleaved rounds: every round runs every method once per batch, the order "
                             "rotating; medians over rounds; ratios are medians of per-round ratios"},
        "flops": {"counter": "torch.utils.flop_counter.FlopCounterMode (+ CPU fused attention)",
                  "unit": "FLOPs per image (a multiply-add is 2)"},
        "energy": meter.describe(),
        "memory": {"source": memory.source, "rss_source": memory.rss_source,
                   "unit": "MiB above the memory in use before the call (measurement round)"},
        "methods": list(entries.values()),
    }
