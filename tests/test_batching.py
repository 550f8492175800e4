import pytest
import torch

from vwt.encoders.batching import (
    pack,
    plan_buckets,
    plan_buckets_by_cost,
    plan_packing,
    unpack,
)


def test_packing_fills_rows_first_fit_decreasing_without_overlap():
    lengths = torch.tensor([5, 9, 3, 7, 2])
    plan = plan_packing(lengths, capacity=10)
    # 9 -> row 0; 7 -> row 1; 5 -> row 2; 3 -> row 1 (7+3); 2 -> row 2 (5+2)
    assert plan.row.tolist() == [2, 0, 1, 1, 2]
    assert plan.offset.tolist() == [0, 0, 7, 0, 5]
    assert plan.num_rows == 3 and plan.row_length == 10


def test_the_capacity_grows_to_the_longest_image():
    plan = plan_packing(torch.tensor([12, 3, 9]), capacity=10)
    assert plan.row_length == 12
    assert plan.row.tolist() == [0, 1, 1] and plan.offset.tolist() == [0, 9, 0]


def test_pack_then_unpack_is_the_identity_on_real_tokens_and_segments_mark_images():
    lengths = torch.tensor([3, 1, 4])
    hidden = torch.randn(3, 4, 2)
    plan = plan_packing(lengths, capacity=5)
    packed, segment = pack(hidden, lengths, plan)
    restored = unpack(packed, lengths, plan, width=4)
    valid = torch.arange(4) < lengths.unsqueeze(1)
    torch.testing.assert_close(restored[valid], hidden[valid], rtol=0, atol=0)
    assert (restored[~valid] == 0).all()
    assert sorted(segment.flatten().tolist()) == [-1] * (segment.numel() - 8) + [0] * 3 + [1] + [2] * 4


def test_buckets_cover_the_batch_longest_first():
    buckets = plan_buckets(torch.tensor([4, 9, 1, 7, 3]), num_buckets=2)
    assert [b.tolist() for b in buckets] == [[1, 3, 0], [4, 2]]


def _cheapest_split(sorted_lengths, overhead, max_images):
    """Brute force: every split of the sorted lengths into runs of at most max_images, the least cost."""
    if not sorted_lengths:
        return 0
    return min(len(sorted_lengths[:k]) * sorted_lengths[0] + overhead
               + _cheapest_split(sorted_lengths[k:], overhead, max_images)
               for k in range(1, min(max_images, len(sorted_lengths)) + 1))


@pytest.mark.parametrize("overhead, max_images", [(0, 12), (5, 3), (20, 4), (1000, 12)])
def test_buckets_by_cost_are_runs_of_similar_length_at_the_least_cost(overhead, max_images):
    lengths = torch.tensor([30, 9, 31, 12, 30, 50, 11, 29, 10, 49])
    buckets = plan_buckets_by_cost(lengths, overhead, max_images)
    order = torch.cat(buckets)
    assert sorted(order.tolist()) == list(range(10))  # every image once
    assert lengths[order].tolist() == sorted(lengths.tolist(), reverse=True)  # runs of the sorted lengths
    assert all(len(b) <= max_images for b in buckets)
    cost = sum(len(b) * int(lengths[b].max()) + overhead for b in buckets)
    assert cost == _cheapest_split(sorted(lengths.tolist(), reverse=True), overhead, max_images)


def test_buckets_by_cost_keep_equal_lengths_together_and_split_where_padding_costs_more():
    lengths = torch.tensor([100, 100, 100, 40, 100])
    assert [b.tolist() for b in plan_buckets_by_cost(lengths, overhead=10)] == [[0, 1, 2, 4], [3]]
    assert [b.tolist() for b in plan_buckets_by_cost(lengths, overhead=100)] == [[0, 1, 2, 4, 3]]  # 60 < 100
    assert [len(b) for b in plan_buckets_by_cost(lengths, overhead=100, max_images=2)] == [2, 2, 1]
    with pytest.raises(ValueError, match="max_images"):
        plan_buckets_by_cost(lengths, max_images=0)


def test_processed_length_is_the_padded_compute_of_each_batching_mode():
    from vwt.encoders.batching import processed_length

    lengths = torch.tensor([10, 5, 5, 2])
    assert processed_length(lengths, "pad", capacity=10) == 10  # everything padded to the longest
    assert processed_length(lengths, "pack", capacity=10, num_buckets=2) == 3 * 10 / 4  # rows [10] [5 5] [2]
    assert processed_length(lengths, "bucket", capacity=10, num_buckets=2) == (2 * 10 + 2 * 5) / 4  # [10 5] [5 2]
    assert processed_length(lengths[:1], "pack", capacity=10) == 10
    assert processed_length(lengths, "ragged", capacity=10) == 22 / 4  # the real tokens only
    assert processed_length(lengths, "auto", capacity=10) == 10  # on CPU: buckets by cost, here one
    uneven = torch.tensor([300, 300] + [20] * 10)  # by cost: [300 300] and the ten short ones
    assert processed_length(uneven, "auto", capacity=300) == (2 * 300 + 10 * 20) / 12
    assert processed_length(uneven, "bucket", capacity=300, buckets=[torch.arange(12)]) == 300  # the caller's groups
    with pytest.raises(ValueError, match="batching must be one of"):
        processed_length(lengths, "stack", capacity=10)


def test_the_tokenizer_mask_column_stands_for_every_prefix_token_of_the_model():
    from vwt.encoders.masks import sequence_mask, with_prefix_sizes

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # [B, 1 + T]
    assert torch.equal(sequence_mask(mask, 1), mask)
    assert torch.equal(sequence_mask(mask, 0), mask[:, 1:])
    assert torch.equal(sequence_mask(mask, 3), torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]))
    sizes = torch.tensor([[2, 1, 0], [4, 0, 0]])
    assert torch.equal(with_prefix_sizes(sizes, 0), sizes)
    assert torch.equal(with_prefix_sizes(sizes, 2), torch.tensor([[1, 1, 2, 1, 0], [1, 1, 4, 0, 0]]))
