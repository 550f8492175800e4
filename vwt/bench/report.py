"""Writing results: ``results.json`` (everything) and ``results.csv`` (one row per method and batch size).

CSV columns (``None`` is an empty cell):

- ``label``, ``method``, ``spec``, ``status``: the method, its spec text, ``ok`` or ``skipped``.
- ``batch_size``: images per call.
- ``tokens_per_image_mean``, ``tokens_per_image_median``: real tokens entering the first layer (CLS
  included, padding excluded), over the images; ``token_ratio`` = mean / base's mean.
- ``tokens_per_layer_mean``: sequence length per layer, averaged over layers and images at this batch
  size, padding included (what the layers compute on; ToMe and DynamicViT shrink it layer by layer);
  ``tokens_per_layer_ratio`` = at the smallest batch size, over base's.
- ``latency_ms``: median time of one call (one batch); at batch 1 the latency per image.
- ``images_per_s``: throughput; ``speedup_vs_base``: median over rounds of base time / method time.
- ``flops_per_image``, ``flops_ratio``: FlopCounterMode, per image (padding and tokenization included).
- ``energy_j_per_image``, ``energy_ratio``: joules where a counter is readable, else empty.
- ``peak_memory_mb``, ``memory_ratio``: peak tensor memory of one call above what was in use before
  (MiB; see :mod:`vwt.bench.memory`); ``peak_rss_mb``: the resident-set peak on CPU (understates).
- ``cls_cosine_mean``, ``cls_cosine_min``: cosine of the pooled output to base's, over the images.
- ``probe_accuracy``, ``probe_retention``: Fashion-MNIST linear probe accuracy, and / base's;
  ``probe_tokens_per_image``: mean tokens per test image entering the first layer.
- ``zero_shot_accuracy``, ``zero_shot_retention``: CLIP zero-shot accuracy, and / base's.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["CSV_FIELDS", "attach_accuracy", "csv_rows", "write_json", "write_csv", "summary_table"]

logger = logging.getLogger(__name__)

CSV_FIELDS = (
    "label", "method", "spec", "status", "batch_size",
    "tokens_per_image_mean", "tokens_per_image_median", "token_ratio", "tokens_per_layer_mean",
    "tokens_per_layer_ratio", "latency_ms", "images_per_s", "speedup_vs_base", "flops_per_image", "flops_ratio",
    "energy_j_per_image", "energy_ratio", "peak_memory_mb", "memory_ratio", "peak_rss_mb",
    "cls_cosine_mean", "cls_cosine_min",
    "probe_accuracy", "probe_retention", "probe_tokens_per_image", "zero_shot_accuracy", "zero_shot_retention",
)


def attach_accuracy(results: dict[str, Any], name: str, accuracy: dict[str, Any]) -> None:
    """Put an accuracy result (``linear_probe`` or ``zero_shot``) into ``results`` and each method's entry."""
    per_method = accuracy.get("per_method", {})
    results.setdefault("accuracy", {})[name] = {k: v for k, v in accuracy.items() if k != "per_method"}
    for entry in results["methods"]:
        if entry["label"] in per_method:
            entry.setdefault("accuracy", {})[name] = per_method[entry["label"]]


def csv_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``results.csv``."""
    rows = []
    for entry in results["methods"]:
        tokens, fidelity = entry.get("tokens", {}), entry.get("fidelity", {})
        accuracy = entry.get("accuracy", {})
        common = {
            "label": entry["label"], "method": entry["method"], "spec": entry["spec"], "status": entry["status"],
            "tokens_per_image_mean": tokens.get("per_image_mean"),
            "tokens_per_image_median": tokens.get("per_image_median"),
            "token_ratio": tokens.get("ratio_vs_base"), "tokens_per_layer_ratio": tokens.get("per_layer_ratio_vs_base"),
            "cls_cosine_mean": fidelity.get("cosine_mean"), "cls_cosine_min": fidelity.get("cosine_min"),
            "probe_accuracy": accuracy.get("linear_probe", {}).get("accuracy"),
            "probe_retention": accuracy.get("linear_probe", {}).get("retention_vs_base"),
            "probe_tokens_per_image": accuracy.get("linear_probe", {}).get("tokens_per_image_mean"),
            "zero_shot_accuracy": accuracy.get("zero_shot", {}).get("accuracy"),
            "zero_shot_retention": accuracy.get("zero_shot", {}).get("retention_vs_base"),
        }
        if not entry["batches"]:
            rows.append(common)
        for batch_size, b in entry["batches"].items():
            rows.append({**common, "batch_size": int(batch_size),
                         "tokens_per_layer_mean": b["tokens_per_layer_mean"], "latency_ms": b["latency_ms"],
                         "images_per_s": b["images_per_s"], "speedup_vs_base": b["speedup_vs_base"],
                         "flops_per_image": b["flops_per_image"], "flops_ratio": b["flops_ratio_vs_base"],
                         "energy_j_per_image": b["energy_j_per_image"], "energy_ratio": b["energy_ratio_vs_base"],
                         "peak_memory_mb": b["peak_memory_mb"], "memory_ratio": b["memory_ratio_vs_base"],
                         "peak_rss_mb": b["peak_rss_mb"]})
    return rows


def write_json(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_csv(results: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in csv_rows(results):
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_FIELDS})
    return path


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def summary_table(results: dict[str, Any]) -> str:
    """A Markdown table: tokens, FLOPs, latency at batch 1 (× base time), throughput at larger batches
    (× base speed-up), energy and peak memory at the largest batch, fidelity and accuracy (retention)."""
    sizes = results["settings"]["batch_sizes"]
    has = {name: name in results.get("accuracy", {}) for name in ("linear_probe", "zero_shot")}
    header = ["method", "tokens/img", f"tokens/layer @b{sizes[0]}", f"GFLOPs/img @b{sizes[0]}"]
    header += [f"ms @b{b}" if b == 1 else f"img/s @b{b} (×base)" for b in sizes]
    header += ["J/img @b%d" % sizes[-1], "peak MiB @b%d" % sizes[-1], "CLS cos"]
    header += ["probe acc (ret., tokens)"] * has["linear_probe"] + ["zero-shot acc (ret.)"] * has["zero_shot"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in results["methods"]:
        if entry["status"] != "ok":
            lines.append(f"| {entry['label']} | skipped: {entry['reason']} |")
            continue
        t, batches = entry["tokens"], entry["batches"]
        first = batches[str(sizes[0])]
        cells = [entry["label"], f"{t['per_image_mean']:.1f} ({t['ratio_vs_base']:.2f})",
                 f"{t['per_layer_mean']:.1f} ({t['per_layer_ratio_vs_base']:.2f})",
                 _fmt(first["flops_per_image"] / 1e9, ".3g")]
        for b in sizes:
            e = batches[str(b)]
            if b == 1:
                cells.append(f"{e['latency_ms']:.1f} (×{_fmt(e['time_ratio_vs_base'], '.2f')})")
            else:
                cells.append(f"{e['images_per_s']:.2f} (×{_fmt(e['speedup_vs_base'], '.2f')})")
        cells.append(_fmt(batches[str(sizes[-1])]["energy_j_per_image"], ".3f"))
        cells.append(_fmt(batches[str(sizes[-1])]["peak_memory_mb"], ".1f"))
        cells.append(f"{entry['fidelity']['cosine_mean']:.4f}")
        for name in ("linear_probe", "zero_shot"):
            if has[name]:
                a = entry.get("accuracy", {}).get(name)
                tokens = f", {a['tokens_per_image_mean']:.0f}" if a and name == "linear_probe" else ""
                retention = _fmt(a["retention_vs_base"], ".3f") if a else ""
                cells.append("–" if a is None else f"{a['accuracy']:.3f} ({retention}{tokens})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
