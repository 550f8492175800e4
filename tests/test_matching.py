import pytest
import torch

from vwt.encoders.merge import merge_tokens
from vwt.tokenize import matching
from vwt.tokenize.matching import (
    closest_first,
    cosine_distance_to_words,
    count_token_sizes,
    fold_surplus_words,
    group_tokens,
    keep_top_variance,
    match_words,
    match_words_budget,
    token_attention_mask,
)

WORDS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])


def test_a_hand_computed_match_with_a_distance_exactly_at_the_threshold():
    # Nearest-word distances: 0 (word 0), 0 (word 1), 1 (best cosine is 0), 0 (word 0, scaled).
    patches = torch.tensor([[[3.0, 0.0], [0.0, 2.0], [-1.0, 0.0], [0.5, 0.0]]])
    distance, word = cosine_distance_to_words(patches, WORDS)
    torch.testing.assert_close(distance, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    assert word[0, :2].tolist() == [0, 1] and word[0, 3] == 0
    # A distance equal to the threshold merges; strictly greater stays alone.
    assert match_words(patches, WORDS, threshold=0.0).tolist() == [[0, 1, -1, 0]]
    assert match_words(patches, WORDS, threshold=1.0)[0, 2] >= 0
    assert match_words(patches, WORDS, threshold=-1.0).tolist() == [[-1, -1, -1, -1]]


def test_matching_in_blocks_gives_the_nearest_words_of_one_product(monkeypatch):
    # 3 images of 50 patches in blocks of 64 rows (the last block short): the same as a brute-force argmax
    patches, words = torch.randn(3, 50, 12, generator=torch.Generator().manual_seed(0)), torch.randn(40, 12)
    monkeypatch.setattr(matching, "MATCH_BLOCK_ROWS", 64)
    distance, word = cosine_distance_to_words(patches, words)
    cosine = torch.nn.functional.cosine_similarity(patches[:, :, None], words[None, None], dim=-1)  # [3, 50, 40]
    best, nearest = cosine.max(dim=-1)
    assert torch.equal(word, nearest)
    torch.testing.assert_close(distance, 1.0 - best)
    monkeypatch.setattr(matching, "MATCH_BLOCK_ROWS", 10_000)  # one product: the same words and distances
    one_distance, one_word = cosine_distance_to_words(patches, words)
    assert torch.equal(one_word, word)
    torch.testing.assert_close(one_distance, distance, rtol=1e-6, atol=1e-6)  # a BLAS may block rows differently


def test_patches_sharing_a_word_form_one_token_numbered_by_first_patch():
    word_ids = torch.tensor([[2, -1, 0, 2, -1, 0], [-1, -1, -1, -1, -1, -1]])
    patch_to_token, num_tokens = group_tokens(word_ids, num_words=3)
    assert patch_to_token.tolist() == [[0, 1, 2, 0, 3, 2], [0, 1, 2, 3, 4, 5]]
    assert num_tokens.tolist() == [4, 6]


def test_keep_top_variance_keeps_the_highest_in_raster_order():
    variance = torch.tensor([[0.1, 5.0, 0.2, 3.0], [9.0, 0.0, 1.0, 2.0]])
    assert keep_top_variance(variance, 2).tolist() == [[-1, 0, -1, 1], [0, -1, -1, 1]]


def test_a_merged_token_is_the_mean_of_its_members_and_padding_is_zero():
    embeddings = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    patch_to_token = torch.tensor([[0, 1, 0, -1], [0, 0, 0, 0]])
    merged = merge_tokens(embeddings, patch_to_token, length=2)
    torch.testing.assert_close(merged[0, 0], (embeddings[0, 0] + embeddings[0, 2]) / 2)
    torch.testing.assert_close(merged[0, 1], embeddings[0, 1])
    torch.testing.assert_close(merged[1, 0], embeddings[1].mean(0))
    assert torch.equal(merged[1, 1], torch.zeros(3))


def test_attention_mask_has_cls_then_tokens_then_padding():
    assert token_attention_mask(torch.tensor([2, 4])).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_count_token_sizes_counts_the_patches_of_each_token_and_zero_for_padding():
    patch_to_token = torch.tensor([[0, 1, 0, -1, 0], [0, 1, 2, 3, 4]])
    assert count_token_sizes(patch_to_token, 5).tolist() == [[3, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_closest_first_merges_the_nearest_patches_until_the_budget_is_reached():
    # Sorted by distance: p3 (w0), p1 (w1), p0 (w0, joins p3: 4 tokens), p4 (w2), p2 (w1, joins p1: 3 tokens).
    distance = torch.tensor([[0.3, 0.2, 0.5, 0.1, 0.4]])
    word = torch.tensor([[0, 1, 1, 0, 2]])
    assert closest_first(distance, word, 3, budget=5).tolist() == [[False] * 5]  # nothing to merge
    assert closest_first(distance, word, 3, budget=4).tolist() == [[True, True, False, True, False]]
    assert closest_first(distance, word, 3, budget=3).tolist() == [[True] * 5]
    assert closest_first(distance, word, 3, budget=2).tolist() == [[True] * 5]  # unreachable: all join


def test_closest_first_breaks_distance_ties_by_raster_order():
    distance = torch.zeros(1, 4)
    word = torch.tensor([[0, 0, 0, 0]])
    assert closest_first(distance, word, 1, budget=3).tolist() == [[True, True, False, False]]


def test_surplus_words_fold_into_the_nearest_of_the_largest_groups():
    word = torch.tensor([[0, 0, 0, 1, 1, 2, 3]])  # groups of 3, 2, 1, 1
    scores = torch.zeros(1, 7, 4)
    scores[0, 5] = torch.tensor([0.1, 0.9, 1.0, 0.0])  # patch 5 (word 2) is nearer word 1 than word 0
    scores[0, 6] = torch.tensor([0.5, 0.2, 0.0, 1.0])  # patch 6 (word 3) is nearer word 0
    assert fold_surplus_words(scores, word, budget=2).tolist() == [[0, 0, 0, 1, 1, 1, 0]]
    assert fold_surplus_words(scores, word, budget=4).tolist() == word.tolist()  # within the budget: unchanged
    # Groups of equal size: the lower word id stays.
    assert fold_surplus_words(torch.zeros(1, 2, 2), torch.tensor([[1, 0]]), budget=1).tolist() == [[0, 0]]


def test_a_budget_gives_every_image_exactly_that_many_tokens():
    generator = torch.Generator().manual_seed(0)
    patches, words = torch.randn(4, 30, 6, generator=generator), torch.randn(8, 6, generator=generator)
    for budget in (1, 2, 5, 8, 9, 17, 29, 30):  # below, at and above the 8 words
        _, num_tokens = group_tokens(match_words_budget(patches, words, budget), 8)
        assert num_tokens.tolist() == [budget] * 4, budget
    assert (match_words_budget(patches, words, 30) == -1).all()  # a budget of every patch merges nothing


def test_a_budget_equal_to_a_thresholds_token_count_gives_the_same_tokens():
    """Closest first is what a threshold does: the budget only stops where the threshold's count is."""
    generator = torch.Generator().manual_seed(1)
    patches, words = torch.randn(1, 40, 6, generator=generator), torch.randn(12, 6, generator=generator)
    for threshold in (0.2, 0.4, 0.6, 0.8):
        by_threshold, n = group_tokens(match_words(patches, words, threshold), 12)
        by_budget, m = group_tokens(match_words_budget(patches, words, int(n)), 12)
        assert torch.equal(by_budget, by_threshold) and int(m) == int(n)


def test_bad_budgets_are_clear_errors():
    patches, words = torch.randn(1, 5, 3), torch.randn(2, 3)
    for budget in (0, -1, 6):
        with pytest.raises(ValueError, match="between 1 and the 5 patches"):
            match_words_budget(patches, words, budget)


def _scatter_reduce_mean(embeddings, patch_to_token, num_tokens):
    """The reference merge (the original implementation): scatter_reduce's mean, dropped patches cut off."""
    b, n, d = embeddings.shape
    index = torch.where(patch_to_token >= 0, patch_to_token, torch.full_like(patch_to_token, num_tokens))
    out = embeddings.new_zeros(b, num_tokens + 1, d)
    out = out.scatter_reduce(1, index.unsqueeze(-1).expand(b, n, d), embeddings, reduce="mean", include_self=False)
    return out[:, :num_tokens]


def test_the_exportable_merge_equals_scatter_reduce_mean_with_dropped_patches_and_padding():
    generator = torch.Generator().manual_seed(0)
    b, n, d, t = 5, 196, 48, 70
    embeddings = torch.randn(b, n, d, generator=generator)
    # Each image uses its own number of tokens (the rest of T is padding) and drops some patches (-1).
    used = torch.tensor([70, 1, 35, 60, 196 // 4])
    patch_to_token = (torch.rand(b, n, generator=generator) * used.unsqueeze(1)).long()
    patch_to_token[torch.rand(b, n, generator=generator) < 0.2] = -1
    patch_to_token[:, 0] = used - 1  # every used token exists whatever the draw
    patch_to_token[1] = -1
    patch_to_token[1, 5] = 0  # one image with a single kept patch
    merged = merge_tokens(embeddings, patch_to_token, t)
    assert merged.shape == (b, t, d)
    # Same sums up to the order of float32 additions of at most n unit-scale values: assert_close's
    # float32 defaults (rtol 1.3e-6, atol 1e-5) leave room for that and nothing more.
    torch.testing.assert_close(merged, _scatter_reduce_mean(embeddings, patch_to_token, t))
    for image in range(b):  # padding rows are exactly zero
        assert torch.equal(merged[image, int(used[image]):], torch.zeros(t - int(used[image]), d))


def test_a_low_precision_merge_sums_in_float32_and_keeps_its_dtype():
    generator = torch.Generator().manual_seed(0)
    embeddings = (1 + torch.rand(1, 196, 4, generator=generator)).to(torch.bfloat16)
    patch_to_token = torch.zeros(1, 196, dtype=torch.long)  # one token of 196 patches
    merged = merge_tokens(embeddings, patch_to_token, 1)
    assert merged.dtype == torch.bfloat16
    # Summed in float32 and rounded once, the mean is the float32 mean rounded to bf16 (exactly, unless
    # the float32 mean sits within float32 noise of a bf16 rounding boundary: one bf16 step allowed).
    # Summed in bf16 (bf16's step near the sum ~300 is 2), this mean comes out more than a step off.
    expected = embeddings.float().mean(1, keepdim=True)
    torch.testing.assert_close(merged.float(), expected, rtol=2 ** -8, atol=0)
