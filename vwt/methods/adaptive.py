"""Adaptive Token Merging: each image merges as many tokens as it can spare, in every layer.

ToMe removes the same ``r`` tokens from every image in every layer. Here each image gets its own count,
chosen in one of two ways (:class:`~vwt.methods.tome.ToMeConfig`):

- a **fraction** ``r`` in [0, 0.5): image ``b`` with ``m_b`` mergeable tokens entering the layer (its real
  tokens, less the protected prefix tokens: CLS, registers) merges ``r_b = floor(r · m_b + 1/2)`` of them (round half up, computed in
  float64: the same count for the same image in any batch);
- a **similarity** threshold ``s`` in [-1, 1]: image ``b`` merges every A-to-B edge of ToMe's bipartite
  matching whose key cosine is strictly above ``s``.

Either count is capped at half the image's mergeable tokens, ``floor(m_b / 2)``, as ToMe caps ``r``.
Which edges merge, and how, is exactly ToMe's bipartite soft matching: the ``r_b`` strongest.

Images of one batch then have different lengths: the merged batch is padded (padding last, size 0,
never attended to, never merged into) to its longest image, and each image gets the tokens, in the
order, it would get alone: its unmerged A tokens, then its B tokens, then padding (an image that merges
nothing in a layer keeps its order, as ToMe with ``r=0``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["fraction_counts", "adaptive_soft_matching"]

Merge = Callable[..., torch.Tensor]


def fraction_counts(mergeable: torch.Tensor, fraction: float) -> torch.Tensor:
    """Tokens to merge per image for a fractional ``r``: ``floor(fraction · mergeable + 1/2)``.

    Args:
        mergeable: ``[B]`` int64 mergeable tokens per image (real tokens, less a protected CLS).
        fraction: in [0, 0.5).

    Returns:
        ``[B]`` int64 (round half up in float64, so ``fraction_counts(m, f) == math.floor(f * m + 0.5)``
        for every Python int ``m``).
    """
    return torch.floor(mergeable.double() * fraction + 0.5).long()


def adaptive_soft_matching(metric: torch.Tensor, *, fraction: float | None = None, similarity: float | None = None,
                           protect_cls: bool | int = True, valid: torch.Tensor | None = None
                           ) -> tuple[Merge, torch.Tensor]:
    """ToMe's bipartite soft matching with a per-image merge count.

    Args:
        metric: ``[B, N, C]`` similarity features (attention keys averaged over heads).
        fraction: merge ``floor(fraction · m_b + 1/2)`` tokens of image ``b`` (see :func:`fraction_counts`).
        similarity: merge the edges whose cosine is strictly above this (give exactly one of the two).
        protect_cls: how many leading tokens are never merged and stay first, in order (``True``: 1, a CLS
            token; more for registers or a distillation token).
        valid: ``[B, N]`` bool, False for padding; real tokens first in each row (None: no padding).

    Returns:
        ``(merge, merged)``: ``merge(x [B, N, K], mode="sum"|"amax"|"mean") -> [B, L, K]`` with each image's
        unmerged A tokens, then its B tokens (its tokens in their order if it merges none), then zeros
        (padding) up to ``L``, the longest image's new length; and ``merged`` ``[B]`` int64, the tokens
        each image merged.
    """
    if (fraction is None) == (similarity is None):
        raise ValueError("give exactly one of fraction and similarity")
    b, n, _ = metric.shape
    protected = int(protect_cls)
    valid = torch.ones(b, n, dtype=torch.bool, device=metric.device) if valid is None else valid
    with torch.no_grad():
        metric = F.normalize(metric, dim=-1)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)  # [B, Na, Nb]
        # cosines are >= -1: padding ranks below every real edge, above CLS; no token merges into padding
        scores = scores.masked_fill(~valid[:, None, 1::2], -3.0).masked_fill(~valid[:, ::2, None], -2.0)
        if protected:
            scores[:, : (protected + 1) // 2, :] = -math.inf  # protected tokens of A (even positions)
            scores[:, :, : protected // 2] = -math.inf  # protected tokens of B (odd positions)
        node_max, node_idx = scores.max(dim=-1)  # [B, Na]
        mergeable = valid.sum(dim=1) - protected  # [B]
        if fraction is not None:
            count = fraction_counts(mergeable, fraction)
        else:
            count = (node_max > similarity).sum(dim=1)  # padding (-2) and CLS (-inf) never pass s >= -1
        count = torch.minimum(count, mergeable.clamp_min(0) // 2)
        edge_idx = node_max.argsort(dim=-1, descending=True, stable=True)  # [B, Na]
        rank = torch.empty_like(edge_idx).scatter_(1, edge_idx, torch.arange(edge_idx.shape[1], device=metric.device)
                                                   .expand_as(edge_idx))
        merged_a = rank < count[:, None]  # [B, Na]
        na, nb = merged_a.shape[1], n // 2
        # where each A token's value goes: its B token, or a discarded slot nb when it stays
        dst_idx = torch.where(merged_a, node_idx, torch.full_like(node_idx, nb))[..., None]  # [B, Na, 1]
        # output order over [A tokens, B tokens]: protected prefix tokens in their order, kept real A (group 0),
        # real B (group 1), padding (group 2); an image that merges nothing keeps its order (as ToMe with r=0)
        group = torch.cat([torch.where(valid[:, ::2] & ~merged_a, 0, 2), torch.where(valid[:, 1::2], 1, 2)], dim=1)
        position = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)]).to(metric.device)  # [N] before
        merging = torch.where(position < protected, position, (group + 1) * n + torch.arange(n, device=metric.device))
        key = torch.where(count[:, None] > 0, merging, position + 3 * n * (group == 2))
        order = key.argsort(dim=1)  # [B, N], keys unique per row
        length = int((group < 2).sum(dim=1).max())  # one host sync per layer: the new padded length
        order = order[:, :length, None]  # [B, L, 1]
        keep = group.gather(1, order[..., 0]).lt(2)[..., None]  # [B, L, 1]

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = x[:, ::2], x[:, 1::2]
        c = x.shape[-1]
        dst = torch.cat([dst, dst.new_zeros(b, 1, c)], dim=1)
        dst = dst.scatter_reduce(1, dst_idx.expand(b, na, c), src, reduce=mode)[:, :nb]
        out = torch.cat([src, dst], dim=1).gather(1, order.expand(b, length, c))
        return out.masked_fill(~keep, 0)

    return merge, count
