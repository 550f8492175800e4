"""Attention with a per-key bias (``log`` of each token's size) for the layers vwt drives itself.

Two kernels compute the same thing, ``softmax(q kᵀ · scale + bias_key) v``:

- ``"flex"``: PyTorch FlexAttention (compiled), the bias as a ``score_mod`` and, for a ragged batch, a
  document block mask: no float mask is built, and blocks across images are skipped.
- ``"sdpa"``: ``scaled_dot_product_attention`` with the bias as an additive float mask; a ragged batch
  is padded for the attention only (its linear layers still see only real tokens).

:func:`attention_kernel` picks one (``"auto"``) by a fixed rule on the device, measured on this
project's CPU (``scripts/bench_latency.py --batch``): there the compiled FlexAttention kernel takes
about 3x the thread time of SDPA with the float bias on the same tokens, while the float bias costs
SDPA about 4%; so CPU runs ``"sdpa"``. On CUDA a float mask keeps SDPA off its fused kernels, which
FlexAttention keeps, so CUDA runs ``"flex"`` (not measured here: no GPU was at hand). Attention dropout
(training) always runs ``"sdpa"`` (FlexAttention has none).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .ragged import RaggedLayout, document_block_mask, from_ragged, to_ragged

__all__ = ["KERNELS", "attention_kernel", "sized_attention", "ragged_attention", "ragged_block_mask", "ragged_key_bias"]

KERNELS = ("auto", "flex", "sdpa")
"""The attention kernels :func:`attention_kernel` accepts; ``"auto"`` resolves to one of the others."""


def attention_kernel(kernel: str, device: torch.device | str, dropout_p: float = 0.0) -> str:
    """``"flex"`` or ``"sdpa"``: ``kernel`` itself, or for ``"auto"`` the rule in the module notes."""
    if kernel not in KERNELS:
        raise ValueError(f"attention kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if kernel == "flex" and dropout_p:
        raise ValueError("FlexAttention has no attention dropout: use the 'sdpa' kernel in training mode")
    if kernel != "auto":
        return kernel
    return "flex" if torch.device(device).type == "cuda" and not dropout_p else "sdpa"


@functools.cache
def _compiled_flex(dynamic: bool | None = None) -> Callable[..., torch.Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=dynamic)


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor | None, scale: float,
          block_mask: object | None = None) -> torch.Tensor:
    """FlexAttention with ``key_bias [B, N]`` (or ``[N]`` for one sequence) added to each key's score."""
    if torch.compiler.is_compiling():  # already inside a graph: the caller's compile takes it in
        from torch.nn.attention.flex_attention import flex_attention as flex
    else:  # a dense batch on CPU compiles with symbolic shapes from the first call: inductor's CPU kernel failed to
        # build when it recompiled one specialised on a batch for a new sequence length (torch 2.13; ToMe's length
        # changes every layer), and with a block mask it fails the other way round, so the ragged path keeps the default
        flex = _compiled_flex(True if q.device.type == "cpu" and block_mask is None else None)
    score_mod = None
    if key_bias is not None and key_bias.ndim == 1:
        def score_mod(score, b, h, q_index, k_index):  # noqa: ANN001, ANN202
            return score + key_bias[k_index]
    elif key_bias is not None:
        def score_mod(score, b, h, q_index, k_index):  # noqa: ANN001, ANN202
            return score + key_bias[b, k_index]
    return flex(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


def sized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor | None,
                    scale: float, dropout_p: float = 0.0, kernel: str = "auto") -> torch.Tensor:
    """``softmax(q kᵀ · scale + key_bias) v`` on a dense batch.

    Args:
        q, k, v: ``[B, H, N, d]``.
        key_bias: ``[B, N]`` float added to the logits of each key (``log(size)``; ``-inf`` hides a key),
            or None.
        scale: the logit scale.
        dropout_p: attention dropout (training only; ``"sdpa"``).
        kernel: ``"auto"``, ``"flex"`` or ``"sdpa"`` (see :func:`attention_kernel`).

    Returns:
        ``[B, H, N, d]``.
    """
    if attention_kernel(kernel, q.device, dropout_p) == "flex":
        return _flex(q, k, v, None if key_bias is None else key_bias.float(), scale)
    mask = None if key_bias is None else key_bias.to(q.dtype)[:, None, None, :]  # [B, 1, 1, N]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


def ragged_key_bias(layout: RaggedLayout, key_bias: torch.Tensor | None, kernel: str) -> torch.Tensor | None:
    """The key bias in the form :func:`ragged_attention` takes for ``kernel`` (built once for every layer).

    Args:
        layout: the ragged batch.
        key_bias: ``[B, S]`` float (``log(size)``) on the padded batch, or None.
        kernel: ``"flex"`` or ``"sdpa"``.

    Returns:
        ``"flex"``: ``[L]`` float32, or None. ``"sdpa"``: ``[B, S]`` float32 with ``-inf`` at the padding.
    """
    if kernel == "flex":
        return None if key_bias is None else to_ragged(key_bias, layout).float()
    valid = from_ragged(torch.ones_like(layout.document, dtype=torch.bool), layout, fill=False)  # [B, S]
    bias = torch.zeros(valid.shape, device=valid.device) if key_bias is None else key_bias.float()
    return bias.masked_fill(~valid, float("-inf"))


def ragged_block_mask(layout: RaggedLayout, kernel: str) -> object | None:
    """The document block mask the ``"flex"`` kernel needs for ``layout`` (built once for every layer),
    None for ``"sdpa"``."""
    return document_block_mask(layout.document) if kernel == "flex" else None


def ragged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: RaggedLayout,
                     key_bias: torch.Tensor | None, scale: float, dropout_p: float = 0.0, kernel: str = "sdpa",
                     block_mask: object | None = None) -> torch.Tensor:
    """Attention within each image of a ragged sequence.

    Args:
        q, k, v: ``[1, H, L, d]``, the batch's real tokens image after image (see :mod:`vwt.encoders.ragged`).
        layout: where those tokens came from.
        key_bias: from :func:`ragged_key_bias` for this ``kernel`` (``"sdpa"`` needs it: it masks the padding).
        scale: the logit scale.
        dropout_p: attention dropout (``"sdpa"`` only).
        kernel: ``"flex"`` or ``"sdpa"`` (resolved: see :func:`attention_kernel`).
        block_mask: for ``"flex"``, :func:`ragged_block_mask` of ``layout``.

    Returns:
        ``[1, H, L, d]``.
    """
    if kernel == "flex":
        if block_mask is None:
            block_mask = document_block_mask(layout.document)
        return _flex(q, k, v, key_bias, scale, block_mask)
    h, d = q.shape[1], q.shape[-1]

    def padded(x: torch.Tensor) -> torch.Tensor:  # [1, H, L, d] -> [B, H, S, d]
        return from_ragged(x[0].transpose(0, 1), layout).transpose(1, 2)

    out = sized_attention(padded(q), padded(k), padded(v), key_bias, scale, dropout_p, kernel="sdpa")  # [B, H, S, d]
    return out.transpose(1, 2).reshape(-1, h, d)[layout.index].transpose(0, 1).unsqueeze(0)
