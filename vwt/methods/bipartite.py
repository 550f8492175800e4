"""ToMe's bipartite soft matching and its size-weighted merge: pure tensor functions.

Tokens alternate into set A (even positions) and set B (odd positions); each A token proposes its most
cosine-similar B token and the ``r`` strongest proposals merge. The order after a merge, and the protected
prefix tokens, are described in :mod:`vwt.methods.tome`, which runs these in every layer;
:mod:`vwt.methods.adaptive` is the same matching with a count per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["bipartite_soft_matching", "merge_wavg", "padding_last", "merge_source"]

Merge = Callable[..., torch.Tensor]


def bipartite_soft_matching(metric: torch.Tensor, r: int, protect_cls: bool | int = True,
                            valid: torch.Tensor | None = None) -> tuple[Merge, Merge]:
    """ToMe's matching: alternate tokens into A (even) and B (odd), merge the ``r`` most similar A→B edges.

    Each A token proposes its most cosine-similar B token; the ``r`` A tokens with the strongest
    proposals are merged into their B token. ``r`` is capped at half the mergeable tokens.

    Args:
        metric: ``[B, N, C]`` similarity features (ToMe: attention keys averaged over heads).
        r: tokens to remove (the same for every image).
        protect_cls: how many leading tokens are never merged and stay first, in order (``True``: 1, a
            CLS token; 2 is ToMe's class + distillation token). A protected token in A is never a
            source, one in B never a destination.
        valid: ``[B, N]`` bool, False for padding (a padded batch of merged tokens, size 0): no token
            merges into padding, and padding is merged (a no-op in a size-weighted merge) only after
            every real candidate.

    Returns:
        ``(merge, unmerge)``: ``merge(x [B, N, K], mode="mean"|"sum"|"amax") -> [B, N - r, K]`` and
        ``unmerge(y [B, N - r, K]) -> [B, N, K]`` (every token gets the value of the token it is in).
    """
    protected = int(protect_cls)
    n = metric.shape[1]
    r = min(r, (n - protected) // 2)
    if r <= 0:
        return (lambda x, mode="mean": x), (lambda x: x)
    with torch.no_grad():
        metric = F.normalize(metric, dim=-1)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(-1, -2)  # [B, Na, Nb]
        if valid is not None:  # cosines are >= -1: padding ranks below every real edge, above CLS
            scores = scores.masked_fill(~valid[:, None, 1::2], -3.0).masked_fill(~valid[:, ::2, None], -2.0)
        if protected:
            scores[:, : (protected + 1) // 2, :] = -math.inf  # protected tokens of A (even positions)
            scores[:, :, : protected // 2] = -math.inf  # protected tokens of B (odd positions)
        node_max, node_idx = scores.max(dim=-1)  # [B, Na]
        edge_idx = node_max.argsort(dim=-1, descending=True, stable=True)[..., None]  # [B, Na, 1]
        unm_idx = edge_idx[:, r:].sort(dim=1).values  # [B, Na - r, 1], previous order kept
        src_idx = edge_idx[:, :r]  # [B, r, 1]
        dst_idx = node_idx[..., None].gather(dim=1, index=src_idx)  # [B, r, 1]

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = x[:, ::2], x[:, 1::2]
        b, na, c = src.shape
        unm = src.gather(dim=1, index=unm_idx.expand(b, na - r, c))
        src = src.gather(dim=1, index=src_idx.expand(b, r, c))
        dst = dst.scatter_reduce(1, dst_idx.expand(b, r, c), src, reduce=mode)
        if protected < 2:
            return torch.cat([unm, dst], dim=1)
        prefix = torch.stack([unm[:, : protected // 2], dst[:, : protected // 2]], dim=2).flatten(1, 2)
        if protected % 2:
            prefix = torch.cat([prefix, unm[:, protected // 2 : protected // 2 + 1]], dim=1)
        return torch.cat([prefix, unm[:, (protected + 1) // 2 :], dst[:, protected // 2 :]], dim=1)

    def unmerge(y: torch.Tensor) -> torch.Tensor:
        num_unm = unm_idx.shape[1]
        if protected < 2:
            unm, dst = y[:, :num_unm], y[:, num_unm:]
        else:  # undo the prefix order of merge
            split = protected + num_unm - (protected + 1) // 2
            unm = torch.cat([y[:, :protected:2], y[:, protected:split]], dim=1)
            dst = torch.cat([y[:, 1:protected:2], y[:, split:]], dim=1)
        b, _, c = y.shape
        out = y.new_zeros(b, n, c)
        out[:, 1::2] = dst
        out.scatter_(1, (2 * unm_idx).expand(b, num_unm, c), unm)
        out.scatter_(1, (2 * src_idx).expand(b, r, c), dst.gather(dim=1, index=dst_idx.expand(b, r, c)))
        return out

    return merge, unmerge


def merge_wavg(merge: Merge, x: torch.Tensor, size: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average merge.

    Args:
        x: ``[B, N, D]`` tokens; size: ``[B, N, 1]`` patches per token (ones when None).

    Returns:
        ``(x [B, N', D], size [B, N', 1])`` with ``x' = Σ size·x / Σ size`` over each merged group.
    """
    if size is None:
        size = torch.ones_like(x[..., :1])
    x = merge(x * size, mode="sum")
    size = merge(size, mode="sum")
    return x / size.clamp_min(1.0), size  # real sizes are >= 1; padding (size 0) stays 0, not 0/0


def padding_last(x: torch.Tensor, size: torch.Tensor, source: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Move padding (size 0) behind the real tokens, keeping their order (a stable sort).

    A merge leaves padding among the real tokens; ToMe splits tokens into A and B by position, so
    padding must come last for an image in a padded batch to merge as it would alone.
    ``x [B, N, D]``, ``size [B, N, 1]``, ``source [B, N, S0]`` in the same order.
    """
    order = (size[..., 0] == 0).long().argsort(dim=1, stable=True).unsqueeze(-1)  # [B, N, 1]
    take = lambda t: t.gather(1, order.expand(-1, -1, t.shape[-1]))  # noqa: E731
    return take(x), take(size), None if source is None else take(source)


def merge_source(merge: Merge, source: torch.Tensor) -> torch.Tensor:
    """Track which input tokens each token holds: ``source [B, N, S0]`` 0/1 -> ``[B, N', S0]``."""
    return merge(source, mode="amax")
