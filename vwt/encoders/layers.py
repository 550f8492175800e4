"""A transformer layer driven step by step from its :class:`~vwt.encoders.base.LayerParts`.

The attention itself is the caller's (``attend``): the ragged runner keeps it within each image, ToMe
adds ``log(size)`` and merges tokens between the two halves. Nothing on the model is swapped or stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .attention import ragged_attention, ragged_block_mask, ragged_key_bias
from .base import LayerParts
from .ragged import RaggedLayout, from_ragged, to_ragged

__all__ = ["Attend", "attention_block", "mlp_block", "run_ragged_layers"]

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, float], torch.Tensor]
"""``attend(q, k, v, scale, dropout_p) -> [B, H, N, d]`` on ``[B, H, N, d]`` queries, keys and values."""


def attention_block(parts: LayerParts, x: torch.Tensor, attend: Attend) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention half of a layer: ``x + drop(scale1(out(attend(q, k, v))))`` on ``norm1(x)``.

    Args:
        parts: the layer's pieces.
        x: ``[B, N, D]``.
        attend: the attention (see :data:`Attend`).

    Returns:
        ``(x [B, N, D], keys [B, H, N, d])`` (ToMe matches tokens on the keys).
    """
    b, n, _ = x.shape
    h = parts.norm1(x)
    q, k, v = (proj(h).view(b, n, parts.num_heads, parts.head_dim).transpose(1, 2)
               for proj in (parts.q, parts.k, parts.v))
    dropout_p = parts.attention_dropout if parts.attention.training else 0.0
    h = parts.out(attend(q, k, v, parts.scale, dropout_p).transpose(1, 2).reshape(b, n, -1))
    for module in (parts.scale1, parts.residual_dropout):
        h = h if module is None else module(h)
    return x + h, k


def mlp_block(parts: LayerParts, x: torch.Tensor) -> torch.Tensor:
    """The MLP half of a layer: ``x + drop(scale2(mlp(norm2(x))))``, ``[B, N, D]``."""
    h = parts.mlp(parts.norm2(x))
    for module in (parts.scale2, parts.residual_dropout):
        h = h if module is None else module(h)
    return x + h


def run_ragged_layers(parts: Sequence[LayerParts], hidden: torch.Tensor, layout: RaggedLayout,
                      key_bias: torch.Tensor | None, kernel: str) -> torch.Tensor:
    """Every layer on the real tokens only, attention within each image.

    Args:
        parts: the layers' pieces, in order.
        hidden: ``[B, S, D]`` padded hidden states.
        layout: :func:`~vwt.encoders.ragged.ragged_layout` of the padding mask.
        key_bias: ``[B, S]`` float added to the logits of each key (``log(size)``), or None.
        kernel: ``"flex"`` or ``"sdpa"`` (see :func:`vwt.encoders.attention.attention_kernel`).

    Returns:
        ``[B, S, D]``, zeros at the padding.
    """
    block_mask = ragged_block_mask(layout, kernel)
    bias = ragged_key_bias(layout, key_bias, kernel)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout_p: float) -> torch.Tensor:
        return ragged_attention(q, k, v, layout, bias, scale, dropout_p, kernel, block_mask)

    x = to_ragged(hidden, layout).unsqueeze(0)  # [1, L, D]
    for layer in parts:
        x = mlp_block(layer, attention_block(layer, x, attend)[0])
    return from_ragged(x[0], layout)
