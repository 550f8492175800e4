"""The frontier plot: CLS cosine against tokens per layer and throughput, one colour per method family."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .verdicts import fixed_tome

__all__ = ["write_frontier_plot"]

logger = logging.getLogger(__name__)


_FAMILY_STYLE = {"tome": ("tab:blue", "o"), "tome adaptive": ("tab:cyan", "o"), "vwt": ("tab:orange", "s"),
                 "vwt connected": ("tab:red", "s"), "vwt+tome": ("tab:green", "D"),
                 "vwt+tome adaptive": ("olive", "D"), "vwt windowed": ("tab:brown", "s"),
                 "vwt+tome windowed": ("darkgreen", "D"), "intra": ("tab:purple", "^"), "q8": ("tab:gray", "P"),
                 "base": ("black", "*")}


#: The families whose points are joined along their knob.
_JOINED = ("tome", "vwt connected", "vwt+tome", "vwt+tome adaptive", "vwt windowed", "vwt+tome windowed")


def _family(row: dict[str, Any]) -> str:
    if row["method"] in ("vwt", "vwt+tome") and "window=" in row["label"]:
        return f"{row['method']} windowed"
    if row["method"] == "vwt" and "connected=True" in row["label"]:
        return "vwt connected"
    if row["method"] == "tome" and not fixed_tome(row):
        return "tome adaptive"
    if row["method"] == "vwt+tome" and "threshold=" in row["label"]:
        return "vwt+tome adaptive"
    return row["method"]


def write_frontier_plot(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """A PNG of CLS cosine vs tokens per layer and vs batch-32 throughput, and probe retention vs
    throughput, one colour per method family (ToMe's points joined); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no frontier plot (pip install 'vwt[bench]')")
        return None
    speed = f"throughput at batch {rows[0].get('throughput_batch', 32) if rows else 32} (× base)"
    panels = [("tokens_ratio", "cosine", "mean tokens per layer (× base)", "CLS cosine to base (held-out photos)"),
              ("throughput_ratio", "cosine", speed, "CLS cosine to base (held-out photos)"),
              ("throughput_ratio", "retention", speed, "Fashion-MNIST probe retention")]
    if all(row["retention"] is None for row in rows):  # --no-probe: no empty panel
        panels = panels[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.6))
    families: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        families.setdefault(_family(row), []).append(row)
    for ax, (x, y, xlabel, ylabel) in zip(axes, panels):
        for family, members in families.items():
            color, marker = _FAMILY_STYLE.get(family, ("tab:red", "v"))
            ordered = sorted(members, key=lambda m: m["tokens_ratio"])  # along the knob, not the noisy x
            points = [(m[x], m[y]) for m in ordered if m[x] is not None and m[y] is not None]
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker=marker, color=color, label=family, markersize=6,
                    linestyle="-" if family in _JOINED else "none")
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
