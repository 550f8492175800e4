"""Views of a fused q/k/v projection as three projections, for :class:`~vwt.encoders.base.LayerParts`.

timm's ``Attention.qkv`` and ``nn.MultiheadAttention.in_proj_weight`` hold q, k and v in one matrix of
``3 * H * d`` rows. ToMe needs the keys on their own; these modules compute one third of the fused
projection from the model's own parameters (views, nothing copied), plus timm's per-head q/k norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FusedProjectionSlice", "fused_qkv"]


class FusedProjectionSlice(nn.Module):
    """Rows ``[index * width, (index + 1) * width)`` of a fused projection, then a per-head norm.

    Maps ``[B, N, D]`` to ``[B, N, H * d]`` as the attention's own q, k or v (after ``q_norm``/``k_norm``).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, index: int, num_heads: int, head_dim: int,
                 head_norm: nn.Module | None = None) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias  # the model's own parameters (shared, not copied)
        self.index, self.num_heads, self.head_dim = index, num_heads, head_dim
        self.head_norm = head_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = self.num_heads * self.head_dim
        rows = slice(self.index * width, (self.index + 1) * width)
        out = F.linear(x, self.weight[rows], None if self.bias is None else self.bias[rows])
        if self.head_norm is None or isinstance(self.head_norm, nn.Identity):
            return out
        return self.head_norm(out.unflatten(-1, (self.num_heads, self.head_dim))).flatten(-2)


def fused_qkv(weight: torch.Tensor, bias: torch.Tensor | None, num_heads: int, head_dim: int,
              q_norm: nn.Module | None = None, k_norm: nn.Module | None = None
              ) -> tuple[FusedProjectionSlice, FusedProjectionSlice, FusedProjectionSlice]:
    """q, k and v of a fused ``[3 * H * d, D]`` projection (``q_norm``/``k_norm`` act on each head's ``[d]``)."""
    return (FusedProjectionSlice(weight, bias, 0, num_heads, head_dim, q_norm),
            FusedProjectionSlice(weight, bias, 1, num_heads, head_dim, k_norm),
            FusedProjectionSlice(weight, bias, 2, num_heads, head_dim))
