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


def _output_slots(valid: torch.Tensor, merged_a: torch.Tensor, node_idx: torch.Tensor, count: torch.Tensor,
                  protected: int) -> torch.Tensor:
    """Where each token lands after a merge: ``[B, N]`` int64 positions in the merged sequence, -1 for padding.

    The merged order: protected prefix tokens in their order, the kept real A tokens (even positions),
    the real B tokens (odd positions), each in their previous order; a merged A token lands where its B
    token does. An image that merges nothing keeps its order.

    Args:
        valid: ``[B, N]`` bool, real tokens first; merged_a: ``[B, Na]`` bool, the A tokens merged away;
        node_idx: ``[B, Na]`` the B token each A token proposes; count: ``[B]`` tokens merged per image.
    """
    b, n = valid.shape
    position = torch.arange(n, device=valid.device)
    prefix = position < protected  # [N]
    kept_a = valid[:, ::2] & ~merged_a & ~prefix[::2]  # [B, Na]
    real_b = valid[:, 1::2] & ~prefix[1::2]  # [B, Nb]
    first = min(protected, n)
    slot_a = torch.where(prefix[::2], position[::2], first - 1 + kept_a.cumsum(dim=1))
    after_a = first - 1 + kept_a.sum(dim=1, keepdim=True)  # [B, 1] the last slot of the kept A tokens
    slot_b = torch.where(prefix[1::2], position[1::2], after_a + real_b.cumsum(dim=1))
    slot_a = torch.where(merged_a, slot_b.gather(1, node_idx), slot_a)
    slot = torch.empty(b, n, dtype=torch.long, device=valid.device)
    slot[:, ::2], slot[:, 1::2] = slot_a, slot_b
    slot = torch.where(count[:, None] > 0, slot, position)
    return slot.masked_fill(~valid, -1)


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
        real = valid.sum(dim=1)  # [B]
        mergeable = real - protected
        if fraction is not None:
            count = fraction_counts(mergeable, fraction)
        else:
            count = (node_max > similarity).sum(dim=1)  # padding (-2) and CLS (-inf) never pass s >= -1
        count = torch.minimum(count, mergeable.clamp_min(0) // 2)
        edge_idx = node_max.argsort(dim=-1, descending=True, stable=True)  # [B, Na]
        rank = torch.empty_like(edge_idx).scatter_(1, edge_idx, torch.arange(edge_idx.shape[1], device=metric.device)
                                                   .expand_as(edge_idx))
        merged_a = rank < count[:, None]  # [B, Na]
        slot = _output_slots(valid, merged_a, node_idx, count, protected)  # [B, N], -1 for padding
        length = int((real - count).max())  # one host sync per layer: the new padded length
        # each input token's row in the merged batch flattened to [B * L + 1]; padding goes to the last row
        row = torch.arange(b, device=metric.device)[:, None] * length + slot
        row = torch.where(slot >= 0, row, b * length).flatten()  # [B * N]

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        c = x.shape[-1]
        out = x.new_zeros(b * length + 1, c)
        if mode == "sum":  # the hot path (size-weighted merges): one pass, rows added in token order
            out.index_add_(0, row, x.reshape(b * n, c))
        else:
            out.scatter_reduce_(0, row[:, None].expand(-1, c), x.reshape(b * n, c), reduce=mode, include_self=False)
        return out[:-1].view(b, length, c)

    return merge, count
