"""Issue goals as verdicts on frontier rows: VWT against ToMe at equal tokens (and throughput).

ToMe's values are interpolated between its measured int ``r`` (:func:`interpolate`); below or above its
range there is no comparison (no extrapolation).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["interpolate", "fixed_tome", "goal_verdict", "margin_verdict"]


def interpolate(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """Piecewise-linear ``y(x)`` through ``points``; None outside their x range."""
    points = sorted(points)
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[0][1] if len(points) == 1 and points[0][0] == x else None


def _tome_retention_at(by_speed: list[tuple[float, float]], throughput: float | None) -> float | None:
    """ToMe's retention at ``throughput``: interpolated inside ToMe's measured range; beyond its fastest
    configuration, the best retention of any ToMe configuration (no faster one was measured, so ToMe gets
    its most favourable value); None below its slowest."""
    if not by_speed or throughput is None:
        return None
    inside = interpolate(by_speed, throughput)
    if inside is not None or throughput < max(x for x, _ in by_speed):
        return inside
    return max(y for _, y in by_speed)


def goal_verdict(rows: list[dict[str, Any]], max_tokens: float = 0.65, cosine_slack: float = 0.003) -> dict[str, Any]:
    """Issue 10's goal: a VWT configuration at ``<= max_tokens`` of the tokens whose CLS cosine is within
    ``cosine_slack`` of ToMe's at equal mean tokens per layer (or better), and whose probe retention is
    at least ToMe's at equal batch-32 throughput. ToMe's values are interpolated between its ``r``.

    Returns:
        ``{"met": bool, "best": label or None, "candidates": [...]}``, each candidate with its gaps to ToMe.
    """
    tome = [r for r in rows if fixed_tome(r)]
    by_tokens = [(r["tokens_ratio"], r["cosine"]) for r in tome]
    by_speed = [(r["throughput_ratio"], r["retention"]) for r in tome
                if r["throughput_ratio"] is not None and r["retention"] is not None]
    candidates = []
    for r in rows:
        if not r["method"].startswith("vwt") or r["tokens_ratio"] > max_tokens:
            continue
        tome_cosine = interpolate(by_tokens, r["tokens_ratio"]) if by_tokens else None
        tome_retention = _tome_retention_at(by_speed, r["throughput_ratio"])
        cosine_gap = None if tome_cosine is None else r["cosine"] - tome_cosine
        retention_gap = None if tome_retention is None or r["retention"] is None else r["retention"] - tome_retention
        met = cosine_gap is not None and cosine_gap >= -cosine_slack and retention_gap is not None and retention_gap >= 0
        candidates.append({"label": r["label"], "tokens_ratio": r["tokens_ratio"], "cosine": r["cosine"],
                           "tome_cosine": tome_cosine, "cosine_gap": cosine_gap, "retention": r["retention"],
                           "tome_retention": tome_retention, "retention_gap": retention_gap, "met": met})
    scored = [c for c in candidates if c["cosine_gap"] is not None]
    best = max(scored, key=lambda c: (c["met"], c["cosine_gap"]), default=None)
    return {"met": bool(best and best["met"]), "best": best["label"] if best else None, "max_tokens": max_tokens,
            "cosine_slack": cosine_slack, "candidates": candidates}


def fixed_tome(row: dict[str, Any]) -> bool:
    """Whether a row is ToMe as published (an int ``r``), the baseline; a share or a similarity is adaptive."""
    return row["method"] == "tome" and "similarity=" not in row["label"] and re.search(r"\br=0\.", row["label"]) is None


def margin_verdict(rows: list[dict[str, Any]], max_tokens: float = 0.60, margin: float = 0.005,
                   vwt_margin: float = 0.003) -> dict[str, Any]:
    """Issue 17's goal: the best VWT-family configuration (``vwt``, ``vwt+tome``) at ``<= max_tokens`` of the
    mean tokens per layer beats ToMe's CLS cosine at equal tokens (interpolated between its int ``r``) by
    ``margin``, and the best ``vwt`` alone by ``vwt_margin``. Below ToMe's smallest token count there is no
    comparison (no extrapolation).

    Returns:
        ``{"met": bool, "best": label, "best_vwt": label, "candidates": [...]}`` with each candidate's gap.
    """
    by_tokens = [(r["tokens_ratio"], r["cosine"]) for r in rows if fixed_tome(r)]
    candidates = []
    for r in rows:
        if r["method"] not in ("vwt", "vwt+tome") or r["tokens_ratio"] > max_tokens:
            continue
        tome = interpolate(by_tokens, r["tokens_ratio"]) if by_tokens else None
        candidates.append({"label": r["label"], "method": r["method"], "tokens_ratio": r["tokens_ratio"],
                           "cosine": r["cosine"], "tome_cosine": tome,
                           "cosine_gap": None if tome is None else r["cosine"] - tome})
    scored = [c for c in candidates if c["cosine_gap"] is not None]
    best = max(scored, key=lambda c: c["cosine_gap"], default=None)
    best_vwt = max((c for c in scored if c["method"] == "vwt"), key=lambda c: c["cosine_gap"], default=None)
    met_family = best is not None and best["cosine_gap"] >= margin
    met_vwt = best_vwt is not None and best_vwt["cosine_gap"] >= vwt_margin
    return {"met": met_family and met_vwt, "met_family": met_family, "met_vwt": met_vwt,
            "best": best and best["label"], "best_vwt": best_vwt and best_vwt["label"], "max_tokens": max_tokens,
            "margin": margin, "vwt_margin": vwt_margin, "candidates": candidates}
