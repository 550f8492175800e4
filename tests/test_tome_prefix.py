"""ToMe's matching with several protected prefix tokens (CLS, registers, a distillation token)."""

import torch

from vwt.methods import bipartite_soft_matching


def _tokens(n):
    """``[1, n, 2]``: token i is (i, 1); the metric makes token i most similar to its neighbours."""
    return torch.stack([torch.arange(n, dtype=torch.float32), torch.ones(n)], dim=-1).unsqueeze(0)


def test_protected_prefix_tokens_are_never_merged_and_stay_first_in_order():
    torch.manual_seed(0)
    for protected in range(0, 6):
        x, metric = _tokens(14), torch.randn(1, 14, 8)
        metric[:, :protected] *= 100  # the prefix tokens are the most similar pairs of all
        merge, unmerge = bipartite_soft_matching(metric, 4, protected)
        merged = merge(x, mode="sum")
        assert merged.shape[1] == 10
        assert merged[0, :protected, 0].tolist() == list(range(protected))  # untouched, first, in order
        assert merged[0, :protected, 1].tolist() == [1.0] * protected
        assert merged[..., 1].sum() == 14  # every token lands in exactly one
        assert torch.equal(unmerge(merged)[:, :protected], x[:, :protected])


def test_a_protected_count_of_one_is_the_cls_flag():
    x, metric = _tokens(9), torch.randn(1, 9, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(bipartite_soft_matching(metric, 3, 1)[0](x), bipartite_soft_matching(metric, 3, True)[0](x))
