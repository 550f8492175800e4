"""Attention masks for merged tokens: padding, packing and size-aware (proportional) attention.

A token that stands for ``s`` patches gets ``log(s)`` added to the attention logits wherever it is a
key (ToMe's proportional attention): the softmax then weighs it like ``s`` copies of one patch, so a
merged background keeps the weight its patches had. The bias rides in an additive float 4-D mask,
which the models' ``eager`` attention adds to the logits and ``sdpa`` passes to
``scaled_dot_product_attention`` as ``attn_mask``; a size of 1 adds exactly 0.
"""

from __future__ import annotations

import torch

__all__ = ["attention_bias", "padding_allowed", "segment_allowed", "sequence_mask", "with_prefix_sizes", "is_plain"]


def attention_bias(allowed: torch.Tensor, key_sizes: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Additive float attention mask with the ``log(size)`` of each key.

    Args:
        allowed: ``[B, Q, S]`` bool, True where query ``q`` may attend to key ``s``; ``Q`` is 1 for a
            padding mask that is the same for every query (it broadcasts).
        key_sizes: ``[B, S]`` patches per key token (CLS 1, padding 0), or None for no size bias.
        dtype: the attention's float dtype (the hidden states').

    Returns:
        ``[B, 1, Q, S]``: ``log(size)`` where allowed (0 for sizes 0 and 1), the dtype's most negative
        finite value elsewhere (as ``transformers``' own eager masks).
    """
    if key_sizes is None:
        bias = torch.zeros(allowed.shape[0], 1, allowed.shape[2], dtype=torch.float32, device=allowed.device)
    else:  # log in float32, then cast: sizes up to a few thousand patches fit any float dtype
        bias = key_sizes.clamp_min(1).to(torch.float32).log().unsqueeze(1)
    minimum = torch.tensor(torch.finfo(dtype).min, dtype=torch.float32, device=allowed.device)
    return torch.where(allowed, bias, minimum).to(dtype).unsqueeze(1)


def padding_allowed(mask: torch.Tensor) -> torch.Tensor:
    """Keys a query may attend to under a padding mask: ``[B, S]`` (1 real, 0 padding) -> ``[B, 1, S]`` bool."""
    return mask.bool().unsqueeze(1)


def segment_allowed(segment: torch.Tensor) -> torch.Tensor:
    """Block-diagonal attention of packed images: ``[R, L]`` image index (-1 padding) -> ``[R, L, L]`` bool.

    A token attends to the tokens of its own image; padding attends to padding only.
    """
    return segment.unsqueeze(2) == segment.unsqueeze(1)


def with_prefix_sizes(token_sizes: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Sizes of the whole sequence: ``[B, T]`` token sizes -> ``[B, P + T]``, each prefix token of size 1."""
    if not num_prefix:
        return token_sizes
    return torch.cat([torch.ones_like(token_sizes[:, :1]).expand(-1, num_prefix), token_sizes], dim=1)


def sequence_mask(attention_mask: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """The model's padding mask from a tokenizer's: ``[B, 1 + T]`` -> ``[B, P + T]``.

    A tokenizer is model-agnostic: its first column stands for the model's prefix tokens, however many
    (P = 0 for SigLIP, 1 for CLS, 1 + registers for timm models with register tokens).
    """
    if num_prefix == 1:
        return attention_mask
    prefix = torch.ones_like(attention_mask[:, :1]).expand(-1, num_prefix)
    return torch.cat([prefix, attention_mask[:, 1:]], dim=1)


def is_plain(mask: torch.Tensor, sizes: torch.Tensor) -> bool:
    """Whether nothing is padded and every token is one patch (then no mask at all is needed).

    Args:
        mask: ``[B, S]`` padding mask (1 real, 0 padding).
        sizes: ``[B, S]`` patches per token.

    One host sync; always False while ``torch.compile`` traces (no data-dependent branch there).
    """
    if torch.compiler.is_compiling():
        return False
    return bool((mask.bool() & (sizes == 1)).all())
