"""Groups split into 4-connected pieces, w x w windows and norm bands: hand examples and the tokenizer switches."""

import pytest
import torch

from vwt.tokenize.matching import first_of_equal, group_tokens, norm_bands, split_groups
from vwt.tokenize.spatial import connected_labels, split_connected, split_windows
from vwt.patches import patchify
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


def test_first_of_equal_labels_each_patch_with_the_first_patch_of_its_key():
    key = torch.randint(0, 5, (3, 40), generator=torch.Generator().manual_seed(0))
    expected = [[row.tolist().index(v) for v in row.tolist()] for row in key]
    assert first_of_equal(key).tolist() == expected


def test_a_window_splits_one_word_into_blocks_and_leaves_unmatched_patches_alone():
    words = torch.tensor([[
        7, 7, 7, 7, 7,
        7, 7, 7, 7, -1,
        7, 7, 3, 7, 7,
    ]])
    keys = split_windows(words, (3, 5), 2)  # blocks: cols 0-1, 2-3, 4 over rows 0-1, then row 2
    assert keys.tolist() == [[0, 0, 2, 2, 4, 0, 0, 2, 2, -1, 10, 10, 12, 13, 14]]
    _, num_tokens = group_tokens(keys, 15)
    assert int(num_tokens) == 8  # 3 blocks of word 7 on top, 1 unmatched, then 7 | 3 | 7 | 7 in the last row
    assert split_windows(words, (3, 5), 1).tolist() == [[i if w >= 0 else -1 for i, w in enumerate(words[0])]]


def test_a_window_and_connected_together_split_by_both():
    words = torch.tensor([[
        1, -1, 1, 1,
        1, -1, 1, 1,
    ]])
    assert split_connected(split_windows(words, (2, 4), 4), (2, 4)).tolist() == [[0, -1, 2, 2, 0, -1, 2, 2]]
    assert split_connected(split_windows(words, (2, 4), 1), (2, 4)).tolist() == [[0, -1, 2, 3, 4, -1, 6, 7]]


def test_bad_windows_are_clear_errors(sample_vocab_dir):
    with pytest.raises(ValueError, match="window must be at least 1"):
        split_windows(torch.zeros(1, 4, dtype=torch.long), (2, 2), 0)
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match="window must be a whole number"):
            VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3, window=bad)
    with pytest.raises(ValueError, match="window= works with a threshold"):
        VisualWordTokenizer.from_pretrained(sample_vocab_dir, keep=0.5, window=4)


@pytest.mark.parametrize("connected", [False, True])
def test_the_window_switch_keeps_every_token_in_one_block_and_is_saved(sample_vocab_dir, sample_photos, tmp_path,
                                                                      connected):
    images = [image for _, image in sample_photos[:3]]
    free = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3, connected=connected)
    tokenizer = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3, connected=connected, window=4)
    batch = tokenizer(images)
    loose = free(images)
    assert (batch["num_tokens"] > loose["num_tokens"]).all()  # some word spans two blocks in every photo
    assert torch.equal(batch["token_sizes"].sum(1), loose["token_sizes"].sum(1))  # the same patches merge
    side = batch["pixel_values"].shape[-1] // tokenizer.patch_size
    index = torch.arange(side * side)
    block = (index // side) // 4 * -(-side // 4) + (index % side) // 4
    for patch_to_token in batch["patch_to_token"]:  # every token's patches share one block
        first_block = torch.full((side * side,), -1).scatter_reduce(0, patch_to_token, block, "amax",
                                                                    include_self=False)
        assert torch.equal(first_block[patch_to_token], block)
        last_block = torch.full((side * side,), side * side).scatter_reduce(0, patch_to_token, block, "amin",
                                                                           include_self=False)
        assert torch.equal(last_block[patch_to_token], block)
    # A window as large as the grid changes nothing.
    whole = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3, connected=connected, window=side)
    assert torch.equal(whole(images)["patch_to_token"], loose["patch_to_token"])
    tokenizer.save_pretrained(tmp_path / "tok")
    again = VisualWordTokenizer.from_pretrained(tmp_path / "tok")
    assert again.config.window == 4 and torch.equal(again(images)["patch_to_token"], batch["patch_to_token"])


def test_norm_bands_split_a_word_by_the_patches_norms():
    # Norms away from the band edges (a norm of exactly 2**i may round either way on another machine).
    patches = torch.tensor([[[1.2, 0.0], [1.1, 0.0], [0.0, 1.9], [3.0, 0.0], [0.0, 0.6]]])
    bands = norm_bands(patches, 2.0)  # log2 norms 0.26, 0.14, 0.93, 1.58, -0.74 -> bands 0, 0, 0, 1, -1
    assert bands.tolist() == [[1, 1, 1, 2, 0]]
    words = torch.tensor([[4, 4, 4, 4, -1]])
    assert split_groups(words, bands).tolist() == [[0, 0, 0, 3, -1]]
    with pytest.raises(ValueError, match="ratio must be > 1"):
        norm_bands(patches, 1.0)


def test_the_norm_band_switch_splits_by_norm_and_is_saved(sample_vocab_dir, sample_photos, tmp_path):
    images = [image for _, image in sample_photos[:3]]
    loose = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3)(images)
    tokenizer = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3, norm_band=1.2)
    batch = tokenizer(images)
    assert (batch["num_tokens"] > loose["num_tokens"]).all()
    assert torch.equal(batch["token_sizes"].sum(1), loose["token_sizes"].sum(1))  # the same patches merge
    bands = norm_bands(patchify(batch["pixel_values"], tokenizer.patch_size), 1.2)
    for patch_to_token, band in zip(batch["patch_to_token"], bands):  # every token's patches share one band
        length = int(patch_to_token.max()) + 1
        high = torch.full((length,), -1).scatter_reduce(0, patch_to_token, band, "amax", include_self=False)
        low = torch.full((length,), 10**6).scatter_reduce(0, patch_to_token, band, "amin", include_self=False)
        assert torch.equal(high, low)
    wide = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3, norm_band=1e9)
    assert torch.equal(wide(images)["patch_to_token"], loose["patch_to_token"])
    tokenizer.save_pretrained(tmp_path / "tok")
    again = VisualWordTokenizer.from_pretrained(tmp_path / "tok")
    assert again.config.norm_band == 1.2 and torch.equal(again(images)["patch_to_token"], batch["patch_to_token"])
    for bad in (1.0, 0.5, float("inf")):
        with pytest.raises(ValueError, match="norm_band must be a finite ratio > 1"):
            VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3, norm_band=bad)
    with pytest.raises(ValueError, match="norm_band= works with a threshold"):
        VisualWordTokenizer.from_pretrained(sample_vocab_dir, max_tokens=50, norm_band=1.2)
