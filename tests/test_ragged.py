"""Ragged batches and FlexAttention: the layout, the document block mask, and each kernel against the reference."""

import pytest
import torch
import torch.nn.functional as F

from vwt.encoders.attention import attention_kernel, ragged_attention, ragged_key_bias, sized_attention
from vwt.encoders.batching import choose_batching
from vwt.encoders.ragged import document_block_mask, from_ragged, ragged_layout, to_ragged

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
LENGTHS = [5, 1, 9, 3, 4]  # straddles blocks of 4 in every way: inside one, across two, ending on a boundary


def _mask(lengths):
    return torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def _qkv(lengths, heads=2, dim=8, device="cpu"):
    g = torch.Generator().manual_seed(0)
    total = sum(lengths)
    q, k, v = (torch.randn(1, heads, total, dim, generator=g).to(device) for _ in range(3))
    sizes = torch.randint(1, 6, (total,), generator=g).float().to(device)
    return q, k, v, sizes.log()


def _per_image_reference(q, k, v, key_bias, lengths, scale):
    """Each image's attention alone, by SDPA with the size bias (the eager reference)."""
    out, start = [], 0
    for n in lengths:
        part = slice(start, start + n)
        bias = key_bias[part][None, None, None, :].to(q.dtype)
        out.append(F.scaled_dot_product_attention(q[:, :, part], k[:, :, part], v[:, :, part], attn_mask=bias,
                                                  scale=scale))
        start += n
    return torch.cat(out, dim=2)


def test_the_ragged_layout_keeps_the_real_tokens_image_after_image_and_restores_the_padding():
    mask = _mask(LENGTHS)
    hidden = torch.randn(len(LENGTHS), max(LENGTHS), 3)
    layout = ragged_layout(mask)
    ragged = to_ragged(hidden, layout)
    assert ragged.shape == (sum(LENGTHS), 3)
    assert torch.equal(ragged, hidden[mask])
    assert layout.document.tolist() == [i for i, n in enumerate(LENGTHS) for _ in range(n)]
    restored = from_ragged(ragged, layout)
    assert torch.equal(restored[mask], hidden[mask]) and (restored[~mask] == 0).all()


@pytest.mark.parametrize("block", [2, 4, 8])
def test_the_document_block_mask_skips_exactly_the_blocks_across_images(block):
    document = ragged_layout(_mask(LENGTHS)).document
    total = len(document)
    mask = document_block_mask(document, block_size=block)
    dense = (document.unsqueeze(1) == document.unsqueeze(0))  # [L, L] the attention allowed
    blocks = -(-total // block)
    padded = torch.zeros(blocks * block, blocks * block, dtype=torch.bool)
    padded[:total, :total] = dense
    tiles = padded.view(blocks, block, blocks, block).transpose(1, 2)  # [nq, nkv, block, block]
    inside = torch.zeros_like(padded)
    inside[:total, :total] = True
    whole = inside.view(blocks, block, blocks, block).transpose(1, 2).all(-1).all(-1)
    expect_any, expect_full = tiles.any(-1).any(-1), tiles.all(-1).all(-1) & whole
    partial = torch.zeros(blocks, blocks, dtype=torch.bool)
    full = torch.zeros(blocks, blocks, dtype=torch.bool)
    for i in range(blocks):
        partial[i, mask.kv_indices[0, 0, i, : mask.kv_num_blocks[0, 0, i]].long()] = True
        full[i, mask.full_kv_indices[0, 0, i, : mask.full_kv_num_blocks[0, 0, i]].long()] = True
    assert torch.equal(full, expect_full)
    assert torch.equal(partial | full, expect_any) and not (partial & full).any()
    q, k = torch.meshgrid(torch.arange(total), torch.arange(total), indexing="ij")
    assert torch.equal(mask.mask_mod(0, 0, q, k), dense)


def test_ragged_sdpa_attention_equals_each_image_alone():
    q, k, v, bias = _qkv(LENGTHS)
    layout = ragged_layout(_mask(LENGTHS))
    padded_bias = ragged_key_bias(layout, from_ragged(bias, layout), "sdpa")
    got = ragged_attention(q, k, v, layout, padded_bias, scale=0.3, kernel="sdpa")
    torch.testing.assert_close(got, _per_image_reference(q, k, v, bias, LENGTHS, 0.3), rtol=1e-5, atol=1e-6)


def test_flex_attention_equals_the_eager_reference_on_cpu():
    """Compiled FlexAttention (document block mask, log(size) as score_mod) within 1e-5 of per-image SDPA,
    on a ragged batch and on a dense batch with padded keys (ToMe's path on CUDA)."""
    lengths = [37, 5, 70, 16]  # blocks of 128: one partial block holding four images
    q, k, v, bias = _qkv(lengths)
    layout = ragged_layout(_mask(lengths))
    got = ragged_attention(q, k, v, layout, bias, scale=0.3, kernel="flex")
    torch.testing.assert_close(got, _per_image_reference(q, k, v, bias, lengths, 0.3), rtol=1e-5, atol=1e-5)
    dense_q, dense_k, dense_v = (x.view(1, 2, 4, 32, 8)[0].transpose(0, 1) for x in (q[..., :128, :], k[..., :128, :],
                                                                                    v[..., :128, :]))
    dense_bias = bias[:128].view(4, 32).clone()
    dense_bias[1, 20:] = float("-inf")  # padding (size 0): a hidden key
    flex = sized_attention(dense_q, dense_k, dense_v, dense_bias, 0.3, kernel="flex")
    sdpa = sized_attention(dense_q, dense_k, dense_v, dense_bias, 0.3, kernel="sdpa")
    torch.testing.assert_close(flex, sdpa, rtol=1e-5, atol=1e-5)


def test_the_kernel_rule_is_sdpa_on_cpu_flex_on_cuda_and_never_flex_with_dropout():
    assert attention_kernel("auto", "cpu") == "sdpa"
    assert attention_kernel("auto", "cuda") == "flex"
    assert attention_kernel("auto", "cuda", dropout_p=0.1) == "sdpa"
    assert attention_kernel("flex", "cpu") == "flex"
    with pytest.raises(ValueError, match="no attention dropout"):
        attention_kernel("flex", "cpu", dropout_p=0.1)
    with pytest.raises(ValueError, match="attention kernel must be one of"):
        attention_kernel("triton", "cpu")


def test_auto_batching_pads_what_has_no_padding_buckets_on_cpu_and_runs_ragged_on_cuda():
    assert choose_batching(torch.tensor([7])) == ("pad", 1)  # one image
    assert choose_batching(torch.tensor([7, 7, 7])) == ("pad", 1)  # nothing to pad
    assert choose_batching(torch.full((13,), 7)) == ("bucket", 4)  # one length, too many images for the cache
    assert choose_batching(torch.full((13,), 7), "cuda") == ("pad", 4)
    assert choose_batching(torch.arange(1, 33)) == ("bucket", 8)  # groups of 4 images where not planned by cost
    assert choose_batching(torch.tensor([7, 3, 7]), "cuda") == ("ragged", 1)
    assert choose_batching(torch.tensor([7, 3, 7]), "cuda", ragged=False) == ("bucket", 1)  # no layer parts


def test_auto_buckets_are_planned_by_cost_on_cpu_and_in_equal_groups_elsewhere():
    from vwt.encoders.batching import plan_auto_buckets, plan_buckets, plan_buckets_by_cost

    lengths = torch.tensor([300, 20, 300] + [20] * 9)  # by cost: the two long images apart from the short ones
    as_lists = lambda buckets: [b.tolist() for b in buckets]  # noqa: E731
    assert as_lists(plan_auto_buckets(lengths, "cpu", 3)) == as_lists(plan_buckets_by_cost(lengths)) == \
        [[0, 2], [1, 3, 4, 5, 6, 7, 8, 9, 10, 11]]
    assert as_lists(plan_auto_buckets(lengths, "cuda", 3)) == as_lists(plan_buckets(lengths, 3))


@CUDA
def test_flex_attention_on_cuda_equals_the_eager_reference():
    q, k, v, bias = _qkv([37, 5, 70, 16, 300], dim=16, device="cuda")
    layout = ragged_layout(_mask([37, 5, 70, 16, 300]).cuda())
    got = ragged_attention(q, k, v, layout, bias, scale=0.25, kernel="flex")
    want = _per_image_reference(q, k, v, bias, [37, 5, 70, 16, 300], 0.25)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
