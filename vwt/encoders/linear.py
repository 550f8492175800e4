"""Merge pixel patches before the patch projection: the same tokens for a fraction of the embedding cost.

A ViT's patch embedding is affine per patch, ``embed(p_i) = W p_i + b + pos_i``, so the mean of a group's
embeddings is ``W mean(p) + b + mean(pos)``: averaging the flattened pixel patches (and the position
encodings) first and projecting only the T merged patches gives the same tokens, up to float rounding,
with T instead of N rows in the projection. Families whose embedding is exactly this (a Conv2d with
kernel = stride = patch size, plus a learned position table at the model's own resolution) describe it
with :class:`LinearPatchEmbedding`; the others keep embedding every patch and merging afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..patches import patchify
from .merge import merge_tokens

__all__ = ["LinearPatchEmbedding", "merged_linear_embedding"]


@dataclass(frozen=True)
class LinearPatchEmbedding:
    """A patch embedding that is affine per patch, as tensors (views of the model's own parameters)."""

    # [D, C * p * p]: the Conv2d weight flattened channel-major, the order of :func:`vwt.patches.patchify`.
    weight: torch.Tensor
    # [D] or None: the projection's bias.
    bias: torch.Tensor | None
    # [N, D]: the position encoding of each patch, raster order.
    positions: torch.Tensor
    # [P, D]: the leading tokens (CLS with its position encoding); P = 0 for a model without CLS.
    prefix: torch.Tensor
    # p, the patch size.
    patch_size: int


def merged_linear_embedding(parts: LinearPatchEmbedding, pixel_values: torch.Tensor, patch_to_token: torch.Tensor,
                            length: int) -> torch.Tensor:
    """Tokens as the model's embedding would give them after merging, from pixel patches merged first.

    A column of ones rides along with the pixels: its mean is 1 for a real token and 0 for padding, so
    it carries the bias where there are patches and leaves padding rows exactly zero.

    Args:
        parts: the model's patch embedding.
        pixel_values: ``[B, C, H, W]`` at the model's resolution.
        patch_to_token: ``[B, N]`` int64, -1 for dropped patches.
        length: T, the padded token length.

    Returns:
        ``[B, P + T, D]`` in the weight's dtype: prefix tokens, then the merged tokens.
    """
    patches = patchify(pixel_values.float(), parts.patch_size)  # [B, N, C*p*p], merged in float32
    b, n, _ = patches.shape
    ones = patches.new_ones(b, n, 1)
    positions = parts.positions.float().unsqueeze(0).expand(b, n, -1)
    merged = merge_tokens(torch.cat([patches, ones, positions], dim=-1), patch_to_token, length)
    pixels, present, merged_positions = merged.split([patches.shape[-1], 1, positions.shape[-1]], dim=-1)
    dtype = parts.weight.dtype
    tokens = pixels.to(dtype) @ parts.weight.T + merged_positions.to(dtype)  # [B, T, D]
    if parts.bias is not None:
        tokens = tokens + present.to(dtype) * parts.bias
    return torch.cat([parts.prefix.to(dtype).unsqueeze(0).expand(b, -1, -1), tokens], dim=1)
