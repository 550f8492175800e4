"""Pure tensor functions: split visual-word groups into spatially connected pieces and local windows.

A word can stand for patches all over an image (sky at the top, a shirt of the same colour at the
bottom). Averaging them puts one token at the mean of far-apart positions. Splitting each word's
patches into 4-connected components keeps every merged token a contiguous region, whose mean position
is inside it; on the real DINOv2 ViT-S/14 this is what brings VWT to ToMe's fidelity (see the
frontier in docs/benchmarks.md).

A window goes further: a merged token never reaches beyond one ``w x w`` block of patches (blocks tile
the grid from its top-left corner). A word that covers a white background then leaves one token per
block instead of one for the whole background, so the layers still see where the background is; on the
mixed frontier (objects on white, interiors, wallpapers, photos) this is what lifts VWT above ToMe.
"""

from __future__ import annotations

import torch

from .matching import split_groups

__all__ = ["connected_labels", "split_connected", "window_blocks", "split_windows"]


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



def window_blocks(grid: tuple[int, int], window: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``window x window`` block of every patch: blocks tile the grid from its top-left corner.

    Args:
        grid: ``(rows, cols)`` of the patch grid.
        window: block side in patches, ``>= 1`` (the last row and column of blocks may be smaller).

    Returns:
        ``[N]`` int64 block index of each patch in raster order, blocks numbered in raster order too.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1 patch, got {window}")
    rows, cols = grid
    index = torch.arange(rows * cols, device=device)
    return (index // cols) // window * -(-cols // window) + (index % cols) // window


def split_windows(word_ids: torch.Tensor, grid: tuple[int, int], window: int) -> torch.Tensor:
    """Keys that merge only patches of one word inside one ``window x window`` block of the grid.

    The keys are word ids for :func:`split_connected` (pieces of a word in a block) or for
    :func:`vwt.tokenize.matching.group_tokens` with ``num_words=N``.

    Args:
        word_ids: ``[B, N]`` int64 word of each patch, -1 for a patch that stays alone.
        grid: ``(rows, cols)`` of the patch grid, ``rows * cols == N``.
        window: block side in patches, ``>= 1`` (1: nothing merges).

    Returns:
        ``[B, N]`` int64: for a matched patch the raster index of the first patch of its word in its
        block (in ``[0, N)``), -1 for an unmatched patch.
    """
    rows, cols = grid
    if rows * cols != word_ids.shape[1]:
        raise ValueError(f"a {rows}x{cols} grid has {rows * cols} patches, the words {word_ids.shape[1]}")
    return split_groups(word_ids, window_blocks(grid, window, word_ids.device))
