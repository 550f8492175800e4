"""Groups split into 4-connected pieces: hand examples and the tokenizer switch."""

import pytest
import torch

from vwt.tokenize.matching import group_tokens
from vwt.tokenize.spatial import connected_labels, split_connected
from vwt.tokenize.tokenizer import VisualWordTokenizer


def test_two_separate_regions_of_one_word_become_two_tokens_and_an_l_shape_one():
    words = torch.tensor([[
        0, 0, -1, 1,
        -1, -1, -1, 1,
        0, -1, 1, 1,
        0, -1, -1, -1,
    ]])
    keys = split_connected(words, (4, 4))
    assert keys.tolist() == [[0, 0, -1, 3, -1, -1, -1, 3, 8, -1, 3, 3, 8, -1, -1, -1]]
    patch_to_token, num_tokens = group_tokens(keys, 16)
    # word 0: two pieces (top-left pair, left column pair); word 1: one L; 8 unmatched patches
    assert int(num_tokens) == 2 + 1 + 8


def test_diagonal_neighbours_are_not_connected():
    words = torch.tensor([[5, -1, -1, 5]])
    assert split_connected(words, (2, 2)).tolist() == [[0, -1, -1, 3]]


def test_a_long_serpentine_is_one_component_and_each_image_is_labelled_on_its_own():
    rows, cols = 7, 7
    snake = torch.ones(rows, cols, dtype=torch.long)
    snake[1::2, :] = 0  # every other row blocked ...
    snake[1::4, -1] = 1  # ... but open at alternate ends: one long winding path
    snake[3::4, 0] = 1
    key = torch.where(snake.flatten() == 1, 0, -1 - torch.arange(rows * cols))
    labels = connected_labels(torch.stack([key, torch.arange(rows * cols)]), (rows, cols))
    on_path = snake.flatten() == 1
    assert (labels[0, on_path] == 0).all()
    assert labels[1].tolist() == list(range(rows * cols))  # all keys distinct: nothing joins


def test_the_tokenizer_switch_splits_groups_and_is_saved(sample_vocab_dir, sample_photos, tmp_path):
    images = [image for _, image in sample_photos[:3]]
    loose = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3)(images)
    tight = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3, connected=True)
    split = tight(images)
    assert (split["num_tokens"] > loose["num_tokens"]).all()  # some word's patches lie apart in every photo
    # The same patches merge or stay alone; only where they merge to changes.
    assert torch.equal(split["token_sizes"].sum(1), loose["token_sizes"].sum(1))
    tight.save_pretrained(tmp_path / "tok")
    again = VisualWordTokenizer.from_pretrained(tmp_path / "tok")
    assert again.config.connected and torch.equal(again(images)["patch_to_token"], split["patch_to_token"])


def test_connected_with_a_token_budget_is_a_clear_error(sample_vocab_dir):
    with pytest.raises(ValueError, match="connected=True works with a threshold"):
        VisualWordTokenizer.from_pretrained(sample_vocab_dir, max_tokens=50, connected=True)
