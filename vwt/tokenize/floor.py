"""A per-image token floor for the threshold rule: no image falls below a share of its patches.

A threshold gives each image what it needs, but a near-empty image (a smooth wallpaper, a flat
background) can fall to a handful of tokens, and a model such as DINOv2 then changes its output far
more than the tokens saved are worth. With a floor, such an image matches only its closest patches:
the largest number ``m`` of them (ranked by distance, ties by raster order) that still leaves it at
least the floor. Images above the floor are untouched.

Adding one matched patch never adds a token (it joins a group or starts one of its own, which it
already was), whatever the splits (windows, norm bands, connected pieces), so the token count falls
monotonically in ``m`` and a bisection over ``m`` finds the exact largest one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["closest_ranks", "match_closest", "largest_passing"]


def closest_ranks(distance: torch.Tensor) -> torch.Tensor:
    """Each patch's rank by distance to its word within its image, 0 the closest (ties: earlier patch first).

    Args:
        distance: ``[B, N]`` cosine distance of each patch to its nearest word.

    Returns:
        ``[B, N]`` int64, a permutation of ``0..N-1`` per image.
    """
    order = torch.sort(distance, dim=1, stable=True).indices
    position = torch.arange(distance.shape[1], device=distance.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, position)


def match_closest(word: torch.Tensor, ranks: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Word ids where only each image's ``count`` closest patches match, -1 for the rest.

    Args:
        word: ``[B, N]`` int64 nearest word of each patch.
        ranks: ``[B, N]`` from :func:`closest_ranks`.
        count: ``[B]`` int64 patches that match per image.

    Returns:
        ``[B, N]`` int64 word ids, -1 for unmatched patches.
    """
    return torch.where(ranks < count.unsqueeze(1), word, torch.full_like(word, -1))


def largest_passing(passes: Callable[[torch.Tensor], torch.Tensor], upper: torch.Tensor, bound: int) -> torch.Tensor:
    """Per image, the largest ``m`` in ``[0, upper]`` for which ``passes`` holds, by bisection.

    ``passes`` must hold at 0 and, per image, fail from some ``m`` on (monotone); it is called about
    ``log2(bound)`` times on the whole batch, with no host synchronisation in between.

    Args:
        passes: ``[B]`` int64 candidate counts to ``[B]`` bool.
        upper: ``[B]`` int64, at most ``bound``.
        bound: a Python int no image's ``upper`` exceeds (e.g. the number of patches).

    Returns:
        ``[B]`` int64.
    """
    low, high = torch.zeros_like(upper), upper.clone()
    for _ in range(max(int(bound), 1).bit_length()):
        middle = (low + high + 1) // 2  # above low wherever low < high
        ok = passes(middle)
        open_ = low < high
        low = torch.where(open_ & ok, middle, low)
        high = torch.where(open_ & ~ok, middle - 1, high)
    return low
