import torch

from vwt.matching import (
    cosine_distance_to_words,
    group_tokens,
    keep_top_variance,
    match_words,
    merge_tokens,
    token_attention_mask,
    token_sizes,
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
    merged = merge_tokens(embeddings, patch_to_token, num_tokens=2)
    torch.testing.assert_close(merged[0, 0], (embeddings[0, 0] + embeddings[0, 2]) / 2)
    torch.testing.assert_close(merged[0, 1], embeddings[0, 1])
    torch.testing.assert_close(merged[1, 0], embeddings[1].mean(0))
    assert torch.equal(merged[1, 1], torch.zeros(3))


def test_attention_mask_has_cls_then_tokens_then_padding():
    assert token_attention_mask(torch.tensor([2, 4])).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


def test_token_sizes_count_the_patches_of_each_token_and_zero_for_padding():
    patch_to_token = torch.tensor([[0, 1, 0, -1, 0], [0, 1, 2, 3, 4]])
    assert token_sizes(patch_to_token, 5).tolist() == [[3, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
