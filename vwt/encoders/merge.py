"""The token merge on the model side: the mean of each token's patch embeddings (a pure tensor function)."""

from __future__ import annotations

import torch

__all__ = ["merge_tokens"]


def merge_tokens(embeddings: torch.Tensor, patch_to_token: torch.Tensor, length: int) -> torch.Tensor:
    """Mean of the embeddings of the patches in each token; dropped patches (-1) are ignored.

    Written as sums by ``index_add`` divided by counts: the same value as ``scatter_reduce(...,
    reduce="mean")`` up to the order of the float additions, much faster on CPU, and it exports to ONNX
    (``scatter_reduce``'s mean has no ONNX form) and compiles without graph breaks.

    Args:
        embeddings: ``[B, N, D]`` patch embeddings (position encodings already added).
        patch_to_token: ``[B, N]`` int64, values in ``[-1, length)``.
        length: T, the padded token length (prefix tokens such as CLS not counted).

    Returns:
        ``[B, T, D]`` in the embeddings' dtype (float16/bfloat16 are summed in float32); rows of padding
        (no patch) are zeros.
    """
    b, n, d = embeddings.shape
    dtype = embeddings.dtype
    if dtype in (torch.float16, torch.bfloat16):  # sum in float32: a group can hold all N patches
        embeddings = embeddings.float()
    slots = length + 1  # dropped patches go to an extra slot T per image, cut off afterwards
    index = torch.where(patch_to_token >= 0, patch_to_token, torch.full_like(patch_to_token, length))
    flat = (index + torch.arange(b, device=index.device).unsqueeze(1) * slots).reshape(b * n)  # [B * N]
    sums = embeddings.new_zeros(b * slots, d).index_add(0, flat, embeddings.reshape(b * n, d))
    counts = embeddings.new_zeros(b * slots).index_add(0, flat, embeddings.new_ones(b * n))
    means = sums / counts.clamp_min(1).unsqueeze(-1)  # padding slots: 0 / 1
    return means.reshape(b, slots, d)[:, :length].to(dtype)
