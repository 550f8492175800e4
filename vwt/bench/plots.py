"""PNG plots of a results dict. matplotlib (the ``bench`` extra) is imported here only; without it, a warning.

- ``tokens_vs_latency.png``: mean tokens per layer vs per-image time at the smallest batch size;
- ``speedup.png``: speed-up over base at every batch size;
- ``fidelity_vs_latency.png``: CLS/pooled cosine to base vs per-image time;
- ``accuracy_vs_latency.png``: linear-probe / zero-shot accuracy vs per-image time (when measured).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["write_plots"]

logger = logging.getLogger(__name__)


def _points(results: dict[str, Any]) -> list[tuple[dict[str, Any], float]]:
    size = str(results["settings"]["batch_sizes"][0])
    return [(e, e["batches"][size]["seconds_per_image"] * 1e3) for e in results["methods"] if e["status"] == "ok"]


def _scatter(plt: Any, points: list[tuple[str, float, float]], xlabel: str, ylabel: str, title: str,
             path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label, x, y in points:
        ax.scatter([x], [y], s=30, color="black" if label == "base" else None)
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.margins(x=0.35, y=0.08)  # room for the labels
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(results: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the PNGs into ``out_dir``; ``[]`` (and a warning) where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no PNG plots (pip install 'vwt[bench]')")
        return []
    out = Path(out_dir)
    size = results["settings"]["batch_sizes"][0]
    time_label = f"ms per image at batch {size}"
    points = _points(results)
    written = [
        _scatter(plt, [(e["label"], e["tokens"]["per_layer_mean"], t) for e, t in points],
                 "mean tokens per layer", time_label, "Tokens vs latency", out / "tokens_vs_latency.png"),
        _scatter(plt, [(e["label"], t, e["fidelity"]["cosine_mean"]) for e, t in points],
                 time_label, f"cosine of {points[0][0]['fidelity']['feature']} to base", "Fidelity vs latency",
                 out / "fidelity_vs_latency.png"),
    ]
    for name, title in (("linear_probe", "Fashion-MNIST linear probe"), ("zero_shot", "CLIP zero-shot")):
        scored = [(e["label"], t, e["accuracy"][name]["accuracy"]) for e, t in points if name in e.get("accuracy", {})]
        if scored:
            written.append(_scatter(plt, scored, time_label, "accuracy", f"{title} accuracy vs latency",
                                    out / f"{'accuracy' if name == 'linear_probe' else 'zero_shot'}_vs_latency.png"))
    sizes = results["settings"]["batch_sizes"]
    labels = [e["label"] for e, _ in points]
    fig, ax = plt.subplots(figsize=(max(7.5, 0.6 * len(labels) * len(sizes)), 5))
    width = 0.8 / len(sizes)
    for i, b in enumerate(sizes):
        values = [e["batches"][str(b)]["speedup_vs_base"] or 0.0 for e, _ in points]
        ax.bar([j + i * width for j in range(len(labels))], values, width, label=f"batch {b}")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, rotation=35, ha="right", fontsize=7)
    ax.set(ylabel="speed-up over base (interleaved)", title="Throughput speed-up")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "speedup.png", dpi=120)
    plt.close(fig)
    written.append(out / "speedup.png")
    return written
