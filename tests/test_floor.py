"""The per-image token floor (``min_keep``): pure functions against brute force, the tokenizer on real photos."""

import pytest
import torch

from vwt.patches import patchify
from vwt.tokenize.floor import closest_ranks, largest_passing, match_closest
from vwt.tokenize.matching import cosine_distance_to_words, group_tokens
from vwt.tokenize.tokenizer import VisualWordTokenizer


def test_closest_ranks_order_by_distance_and_break_ties_by_raster_order():
    distance = torch.tensor([[0.3, 0.1, 0.3, 0.0], [0.2, 0.2, 0.2, 0.2]])
    assert closest_ranks(distance).tolist() == [[2, 1, 3, 0], [0, 1, 2, 3]]
    word = torch.tensor([[7, 8, 9, 5], [1, 2, 3, 4]])
    assert match_closest(word, closest_ranks(distance), torch.tensor([2, 3])).tolist() == [[-1, 8, -1, 5],
                                                                                          [1, 2, 3, -1]]


def test_largest_passing_finds_each_images_last_passing_count():
    generator = torch.Generator().manual_seed(0)
    for bound in (1, 2, 7, 64, 256):
        upper = torch.randint(0, bound + 1, (50,), generator=generator)
        limit = torch.randint(0, bound + 1, (50,), generator=generator)  # passes while m <= limit
        calls = []

        def passes(m):
            calls.append(m)
            return m <= limit

        got = largest_passing(passes, upper, bound)
        assert torch.equal(got, torch.minimum(limit, upper))
        assert all((m >= 0).all() for m in calls)
        assert len(calls) == bound.bit_length()


def _images(sample_photos):
    return [image for _, image in sample_photos[:4]]


@pytest.mark.parametrize("splits", [{}, {"connected": True, "window": 4, "norm_band": 1.2}])
def test_an_image_below_the_floor_matches_only_as_many_closest_patches_as_keep_it_there(
        sample_vocab_dir, sample_photos, splits):
    images = _images(sample_photos)
    free = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.5, **splits)(images)
    n = free["patch_to_token"].shape[1]
    tokens = free["num_tokens"]
    min_keep = float(tokens.float().median()) / n  # some photos below the floor, some at or above
    floor = max(1, round(min_keep * n))
    assert (tokens < floor).any() and (tokens >= floor).any()
    tokenizer = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.5, min_keep=min_keep, **splits)
    batch = tokenizer(images)
    assert (batch["num_tokens"] >= floor).all()
    above = tokens >= floor  # untouched, whatever the other images of the batch
    assert torch.equal(batch["num_tokens"][above], tokens[above])
    assert torch.equal(batch["patch_to_token"][above], free["patch_to_token"][above])
    # Brute force on each image below the floor: the largest number of closest patches that keeps the floor.
    brute = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.5, **splits)
    pixels = batch["pixel_values"]
    patches = patchify(pixels, brute.patch_size)
    distance, word = cosine_distance_to_words(patches, brute.vocabulary.centroids)
    ranks = closest_ranks(distance)
    for i in torch.nonzero(~above).flatten().tolist():
        counts = []
        for m in range(int((distance[i] <= 0.5).sum()) + 1):
            ids = match_closest(word[i:i + 1], ranks[i:i + 1], torch.tensor([m]))
            counts.append(int(group_tokens(*brute._split(ids, patches[i:i + 1], pixels.shape[-2:]))[1]))
        assert all(a >= b for a, b in zip(counts, counts[1:]))  # matching one more patch never adds a token
        best = max(m for m, count in enumerate(counts) if count >= floor)
        assert int(batch["num_tokens"][i]) == counts[best]


def test_a_floor_of_every_patch_merges_nothing_and_the_floor_is_saved(sample_vocab_dir, sample_photos, tmp_path):
    images = _images(sample_photos)
    none = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=-1.0)(images)
    every = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=2.0, min_keep=1.0)(images)
    assert torch.equal(every["patch_to_token"], none["patch_to_token"])
    tokenizer = VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.5, min_keep=0.3, connected=True)
    assert "min_keep=0.3" in repr(tokenizer)
    tokenizer.save_pretrained(tmp_path / "tok")
    again = VisualWordTokenizer.from_pretrained(tmp_path / "tok")
    assert again.config.min_keep == 0.3
    assert torch.equal(again(images)["patch_to_token"], tokenizer(images)["patch_to_token"])


def test_bad_floors_are_clear_errors(sample_vocab_dir):
    for bad in (0, 0.0, 1.5, -0.1, True, "0.2", float("nan")):
        with pytest.raises(ValueError, match="min_keep must be a fraction"):
            VisualWordTokenizer.from_pretrained(sample_vocab_dir, threshold=0.3, min_keep=bad)
    with pytest.raises(ValueError, match="min_keep= works with a threshold"):
        VisualWordTokenizer.from_pretrained(sample_vocab_dir, keep=0.5, min_keep=0.2)
