"""Pure tensor functions: split visual-word groups into spatially connected pieces.

A word can stand for patches all over an image (sky at the top, a shirt of the same colour at the
bottom). Averaging them puts one token at the mean of far-apart positions. Splitting each word's
patches into 4-connected components keeps every merged token a contiguous region, whose mean position
is inside it; on the real DINOv2 ViT-S/14 this is what brings VWT to ToMe's fidelity (see the
frontier in docs/benchmarks.md).
"""

from __future__ import annotations

import torch

__all__ = ["connected_labels", "split_connected"]


def connected_labels(key: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Label each patch with the smallest raster index of its 4-connected component of equal keys.

    Neighbouring patches (up, down, left, right) with the same key are connected. Labels propagate as
    a minimum over neighbours, with pointer jumping (``label = label[label]``) so that long components
    converge in few steps; the loop stops when nothing changes (at most ``N`` steps).

    Args:
        key: ``[B, N]`` int64, patches in raster order over ``grid``; equal values may join.
        grid: ``(rows, cols)`` with ``rows * cols == N``.

    Returns:
        ``[B, N]`` int64 in ``[0, N)``: the raster index of the component's first patch.
    """
    b, n = key.shape
    rows, cols = grid
    if rows * cols != n:
        raise ValueError(f"a {rows}x{cols} grid has {rows * cols} patches, the keys {n}")
    index = torch.arange(n, device=key.device)
    row, col = index // cols, index % cols
    # The four neighbours of every patch, or the patch itself at the border: [4, N].
    neighbours = torch.stack([
        torch.where(row > 0, index - cols, index), torch.where(row < rows - 1, index + cols, index),
        torch.where(col > 0, index - 1, index), torch.where(col < cols - 1, index + 1, index),
    ])
    same = key.unsqueeze(1) == key[:, neighbours]  # [B, 4, N]
    label = index.expand(b, n).clone()
    for _ in range(n):
        through = torch.where(same, label[:, neighbours], label.unsqueeze(1)).amin(dim=1)  # [B, N]
        updated = torch.minimum(label, through)
        updated = updated.gather(1, updated)  # pointer jumping
        if torch.equal(updated, label):
            break
        label = updated
    return label


def split_connected(word_ids: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Keys for :func:`vwt.tokenize.matching.group_tokens` that merge only connected patches of one word.

    Args:
        word_ids: ``[B, N]`` int64 word of each patch, -1 for a patch that stays alone.
        grid: ``(rows, cols)`` of the patch grid.

    Returns:
        ``[B, N]`` int64: for a matched patch the first raster index of its connected piece of its
        word (in ``[0, N)``), -1 for an unmatched patch. Use ``group_tokens(keys, N)``.
    """
    n = word_ids.shape[1]
    index = torch.arange(n, device=word_ids.device)
    # Unmatched patches get keys no other patch has (n + own index), so they stay alone.
    key = torch.where(word_ids >= 0, word_ids, -1 - index)
    return torch.where(word_ids >= 0, connected_labels(key, grid), torch.full_like(word_ids, -1))
