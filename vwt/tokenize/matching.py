"""Pure tensor functions: match patches to words, group them into tokens, pad.

Token order (deterministic): tokens are numbered by the raster index of their first patch, so an
image whose patches all stay single keeps the patch order of the unmodified model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._lazy import renamed_attributes

__all__ = [
    "cosine_distance_to_words",
    "apply_threshold",
    "match_words",
    "match_words_budget",
    "closest_first",
    "fold_surplus_words",
    "group_tokens",
    "first_of_equal",
    "split_groups",
    "norm_bands",
    "keep_top_variance",
    "token_attention_mask",
    "count_token_sizes",
]


MATCH_BLOCK_ROWS = 1024
"""Patches :func:`cosine_distance_to_words` matches at a time on CPU: the ``[1024, K]`` block of scores is still in
cache when its maximum is taken, where the whole batch's scores are not (DINOv2 patches, k=1000, batch 32, one thread:
59 against 65 ms); the same nearest words and distances as one product, up to float rounding."""


def cosine_distance_to_words(patches: torch.Tensor, words: torch.Tensor, *, unit_words: bool = False
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest word of every patch by cosine distance ``1 - cos``.

    The patch norm is the same for every word, so the nearest word is the argmax of
    ``patch @ unit_word``; only that maximum is divided by the patch norm. A patch or word of
    zero norm has cosine 0 to everything (distance 1).

    Args:
        patches: ``[B, N, D]``.
        words: ``[K, D]``.
        unit_words: the words are already L2-normalized (a tokenizer normalizes them once).

    Returns:
        ``(distance, word)``: ``[B, N]`` float distance to the nearest word, ``[B, N]`` int64 its index.
    """
    b, n, d = patches.shape
    flat = patches.reshape(b * n, d)
    if flat.device.type == "cpu" and len(flat) > MATCH_BLOCK_ROWS:  # each block's scores still in cache for the max
        unit = words if unit_words else F.normalize(words, dim=-1)
        blocks = [_word_scores(block, unit, True).max(dim=-1) for block in flat.split(MATCH_BLOCK_ROWS)]
        best, word = torch.cat([v for v, _ in blocks]), torch.cat([i for _, i in blocks])
    else:
        best, word = _word_scores(flat, words, unit_words).max(dim=-1)  # [B·N, K] -> [B·N]
    distance = 1.0 - best / flat.norm(dim=-1).clamp_min(1e-12)
    return distance.view(b, n), word.view(b, n)


def _word_scores(patches: torch.Tensor, words: torch.Tensor, unit_words: bool) -> torch.Tensor:
    """``patch @ unit_word`` for every pair: ``[..., N, K]`` from patches ``[..., N, D]`` (the cosine times the
    patch norm)."""
    if patches.shape[-1] != words.shape[-1]:
        raise ValueError(
            f"patches have {patches.shape[-1]} values but words have {words.shape[-1]}: "
            "the vocabulary was built for another patch size or channel count"
        )
    return patches @ (words if unit_words else F.normalize(words, dim=-1)).T


def match_words(patches: torch.Tensor, words: torch.Tensor, threshold: float, *, unit_words: bool = False
                ) -> torch.Tensor:
    """Word of each patch, or -1 where the nearest word is farther than ``threshold`` (strictly).

    Args:
        patches: ``[B, N, D]``.
        words: ``[K, D]``.
        threshold: cosine distance; a patch with distance ``> threshold`` matches no word.
        unit_words: the words are already L2-normalized.

    Returns:
        ``[B, N]`` int64 word ids, -1 for unmatched patches.
    """
    distance, word = cosine_distance_to_words(patches, words, unit_words=unit_words)
    return apply_threshold(distance, word, threshold)


def apply_threshold(distance: torch.Tensor, word: torch.Tensor, threshold: float) -> torch.Tensor:
    """The matching rule: ``word`` where ``distance <= threshold``, else -1 (strictly greater: no word).

    Args:
        distance: ``[...]`` cosine distance to the nearest word; word: ``[...]`` int64 its index.

    Returns:
        ``[...]`` int64 word ids, -1 for unmatched patches.
    """
    return torch.where(distance > threshold, torch.full_like(word, -1), word)


def match_words_budget(patches: torch.Tensor, words: torch.Tensor, budget: int, *, unit_words: bool = False
                       ) -> torch.Tensor:
    """Word of each patch such that every image forms exactly ``budget`` tokens (no threshold).

    Two steps, both vectorised over the batch:

    1. :func:`closest_first`: patches join the group of their own nearest word, closest first, until
       the image is down to ``budget`` tokens; the rest stay tokens of their own.
    2. :func:`fold_surplus_words`: an image whose patches all joined their words and that still has
       more than ``budget`` distinct words keeps its ``budget`` largest word groups, and each patch of
       another word joins the kept word nearest to it.

    Args:
        patches: ``[B, N, D]``.
        words: ``[K, D]``.
        budget: tokens per image, ``1 <= budget <= N``.
        unit_words: the words are already L2-normalized.

    Returns:
        ``[B, N]`` int64 word ids, -1 for patches that stay alone; :func:`group_tokens` makes exactly
        ``budget`` tokens of them in every image.
    """
    n = patches.shape[1]
    if not 1 <= budget <= n:
        raise ValueError(f"the token budget must be between 1 and the {n} patches of an image, got {budget}")
    scores = _word_scores(patches, words, unit_words)  # [B, N, K]
    best, word = scores.max(dim=-1)
    distance = 1.0 - best / patches.norm(dim=-1).clamp_min(1e-12)
    matched = closest_first(distance, word, words.shape[0], budget)
    return torch.where(matched, fold_surplus_words(scores, word, budget), torch.full_like(word, -1))


def closest_first(distance: torch.Tensor, word: torch.Tensor, num_words: int, budget: int) -> torch.Tensor:
    """Which patches join their word: the closest ones, until ``budget`` tokens remain.

    Matching the first ``m`` patches in order of distance (ties: the earlier patch in raster order)
    leaves ``N - m + distinct words among them`` tokens, which never grows with ``m``; each image
    takes the smallest ``m`` that reaches the budget, or all its patches where none does.

    Args:
        distance: ``[B, N]`` distance of each patch to its nearest word.
        word: ``[B, N]`` int64 that word.
        num_words: K.
        budget: tokens per image.

    Returns:
        ``[B, N]`` bool, True for patches that join their word's group.
    """
    b, n = distance.shape
    order = torch.argsort(distance, dim=1, stable=True)  # closest first
    sorted_word = word.gather(1, order)
    rank = torch.arange(n, device=word.device).expand(b, n)
    first_rank = torch.full((b, num_words), n, dtype=torch.long, device=word.device)
    first_rank = first_rank.scatter_reduce(1, sorted_word, rank, reduce="amin")
    opens_group = first_rank.gather(1, sorted_word) == rank  # [B, N] the first patch of its word so far
    groups = torch.cat([opens_group.new_zeros(b, 1, dtype=torch.long), opens_group.long().cumsum(1)], dim=1)
    tokens = n - torch.arange(n + 1, device=word.device) + groups  # [B, N + 1] after matching m = 0..N
    reached = tokens <= budget
    m = torch.where(reached.any(1), reached.long().argmax(1), n)  # the first m that reaches the budget
    return torch.zeros_like(opens_group).scatter(1, order, rank < m.unsqueeze(1))


def fold_surplus_words(scores: torch.Tensor, word: torch.Tensor, budget: int) -> torch.Tensor:
    """Cut each image to at most ``budget`` words: the largest groups stay, other patches join the nearest of them.

    Ties between groups of equal size go to the lower word id. Images with at most ``budget``
    distinct words are returned unchanged.

    Args:
        scores: ``[B, N, K]`` similarity of each patch to each word (higher is nearer).
        word: ``[B, N]`` int64 nearest word of each patch.
        budget: words kept per image.

    Returns:
        ``[B, N]`` int64 word of each patch, among at most ``budget`` distinct words per image.
    """
    b, _, k = scores.shape
    counts = torch.zeros(b, k, dtype=torch.long, device=word.device).scatter_add_(1, word, torch.ones_like(word))
    largest = torch.argsort(counts, dim=1, descending=True, stable=True)[:, :budget]
    kept = torch.zeros(b, k, dtype=torch.bool, device=word.device).scatter_(1, largest, True)
    nearest_kept = scores.masked_fill(~kept.unsqueeze(1), float("-inf")).argmax(-1)  # [B, N]
    surplus = ((counts > 0).sum(1) > budget).unsqueeze(1) & ~kept.gather(1, word)
    return torch.where(surplus, nearest_kept, word)


def group_tokens(word_ids: torch.Tensor, num_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Patches sharing a word form one token; unmatched patches are tokens of their own.

    Args:
        word_ids: ``[B, N]`` int64, -1 for unmatched.
        num_words: K, the vocabulary size.

    Returns:
        ``(patch_to_token, num_tokens)``: ``[B, N]`` int64 token index of each patch (tokens numbered
        by their first patch in raster order), ``[B]`` int64 tokens per image.
    """
    b, n = word_ids.shape
    patch = torch.arange(n, device=word_ids.device).expand(b, n)
    key = torch.where(word_ids >= 0, word_ids, num_words + patch)  # a unique key per unmatched patch
    first = torch.full((b, num_words + n), n, dtype=torch.long, device=word_ids.device)
    first = first.scatter_reduce(1, key, patch, reduce="amin")
    first_of_patch = first.gather(1, key)  # [B, N] raster index of the group's first patch
    is_first = first_of_patch == patch
    rank = is_first.long().cumsum(1) - 1
    return rank.gather(1, first_of_patch), is_first.sum(1)


def first_of_equal(key: torch.Tensor) -> torch.Tensor:
    """The raster index of the first patch of the image with the same key, for every patch.

    A stable sort puts equal keys together with their patches in raster order; the first of each run
    is its group's label.

    Args:
        key: ``[B, N]`` int64.

    Returns:
        ``[B, N]`` int64 in ``[0, N)``.
    """
    b, n = key.shape
    order = torch.argsort(key, dim=1, stable=True)
    sorted_key = key.gather(1, order)
    starts = torch.ones_like(sorted_key, dtype=torch.bool)
    starts[:, 1:] = sorted_key[:, 1:] != sorted_key[:, :-1]
    position = torch.arange(n, device=key.device).expand(b, n)
    run_start = torch.where(starts, position, 0).cummax(dim=1).values  # sorted position of the run's first patch
    return torch.empty_like(order).scatter_(1, order, order.gather(1, run_start))


def split_groups(word_ids: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """Split every word's patches by a second label: patches merge only when word and part are equal.

    Args:
        word_ids: ``[B, N]`` int64 word (or group key) of each patch, -1 for a patch that stays alone.
        part: ``[B, N]`` or ``[N]`` int64 >= 0 (a window block, a norm band).

    Returns:
        ``[B, N]`` int64: for a matched patch the raster index of the first patch with its word and
        part (in ``[0, N)``, usable as a word id with ``num_words=N``), -1 for an unmatched patch.
    """
    index = torch.arange(word_ids.shape[1], device=word_ids.device)
    part = part.expand_as(word_ids)
    key = torch.where(word_ids >= 0, word_ids * (int(part.max()) + 1) + part, -1 - index)  # unmatched: unique
    return torch.where(word_ids >= 0, first_of_equal(key), torch.full_like(word_ids, -1))


def norm_bands(patches: torch.Tensor, ratio: float) -> torch.Tensor:
    """The band of each patch's norm: bands ``[ratio**i, ratio**(i + 1))``, numbered from 0 per image.

    Cosine distance ignores a patch's norm: in normalized pixel space, flat patches of two shades of one
    colour point almost the same way. Patches of one word in different bands do not merge.

    Args:
        patches: ``[B, N, D]``.
        ratio: the bands' ratio, ``> 1``.

    Returns:
        ``[B, N]`` int64 >= 0.
    """
    if not ratio > 1.0:
        raise ValueError(f"the norm band ratio must be > 1, got {ratio}")
    band = torch.floor(patches.norm(dim=-1).clamp_min(1e-12).log() / math.log(ratio)).long()
    return band - band.amin(dim=1, keepdim=True)


def keep_top_variance(variance: torch.Tensor, num_kept: int) -> torch.Tensor:
    """Keep the ``num_kept`` patches of highest variance, in raster order; drop the others (-1).

    Args:
        variance: ``[B, N]``.
        num_kept: patches kept per image, ``1 <= num_kept <= N``.

    Returns:
        ``[B, N]`` int64 ``patch_to_token``.
    """
    b, n = variance.shape
    if not 1 <= num_kept <= n:
        raise ValueError(f"num_kept must be between 1 and {n} patches, got {num_kept}")
    kept = torch.zeros(b, n, dtype=torch.bool, device=variance.device)
    top = torch.argsort(variance, dim=1, descending=True, stable=True)[:, :num_kept]  # ties: earlier patch wins
    kept.scatter_(1, top, True)
    rank = kept.long().cumsum(1) - 1
    return torch.where(kept, rank, torch.full_like(rank, -1))


def token_attention_mask(num_tokens: torch.Tensor, length: int | None = None, prefix: int = 1) -> torch.Tensor:
    """Attention mask of ``prefix`` leading tokens (CLS) plus each image's tokens, padded to ``length``.

    Args:
        num_tokens: ``[B]`` tokens per image.
        length: T, the padded number of tokens (default: the largest of ``num_tokens``).
        prefix: always-attended leading tokens.

    Returns:
        ``[B, prefix + T]`` int64, 1 for real tokens and 0 for padding.
    """
    length = int(num_tokens.max()) if length is None else length
    positions = torch.arange(length, device=num_tokens.device)
    mask = positions.unsqueeze(0) < num_tokens.unsqueeze(1)
    ones = torch.ones(num_tokens.shape[0], prefix, dtype=torch.bool, device=num_tokens.device)
    return torch.cat([ones, mask], dim=1).long()


def count_token_sizes(patch_to_token: torch.Tensor, length: int) -> torch.Tensor:
    """Patches per token: how many patches each token stands for (dropped patches count nowhere).

    Args:
        patch_to_token: ``[B, N]`` int64, values in ``[-1, length)``.
        length: T, the padded token length.

    Returns:
        ``[B, T]`` int64 (the batch's ``token_sizes``); 0 for padding.
    """
    b = patch_to_token.shape[0]
    # Dropped patches go to an extra slot T that is cut off afterwards.
    index = torch.where(patch_to_token >= 0, patch_to_token, torch.full_like(patch_to_token, length))
    sizes = torch.zeros(b, length + 1, dtype=torch.long, device=patch_to_token.device)
    return sizes.scatter_add_(1, index, torch.ones_like(index))[:, :length]


#: Old names (a function named like the batch key it computes).
__getattr__ = renamed_attributes(__name__, {"token_sizes": "count_token_sizes"}, globals())
