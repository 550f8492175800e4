"""ToMe on timm equals ToMe's published timm patch (facebookresearch/ToMe: ``tome/patch/timm.py``, ``tome/merge.py``).

The reference below is written from reading that code, as the definition to compare with: the patched
``Attention`` computes softmax(q kᵀ · scale + log size) by hand and returns the keys' mean over heads, the
patched ``Block`` merges ``r`` tokens between attention and MLP with ``bipartite_soft_matching`` (class
token never a source, distillation token never a destination, ``[unm[:1], dst[:1], unm[1:], dst[1:]]``
with a distillation token) and ``merge_wavg``; ``r`` is ``parse_r`` of an int (constant). Random weights.
"""

import math
from functools import cache

import pytest
import torch

try:
    timm = pytest.importorskip("timm")
except RuntimeError as error:
    pytest.skip(f"timm does not import here: {error}", allow_module_level=True)

from vwt.methods import ToMe
from vwt.preprocess import default_image_processor, preprocess_images


def _reference_matching(metric, r, class_token, distill_token):
    protected = int(class_token) + int(distill_token)
    t = metric.shape[1]
    r = min(r, (t - protected) // 2)
    if r <= 0:
        return lambda x, mode="mean": x
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        scores = a @ b.transpose(-1, -2)
        if class_token:
            scores[..., 0, :] = -math.inf
        if distill_token:
            scores[..., :, 0] = -math.inf
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx, src_idx = edge_idx[..., r:, :], edge_idx[..., :r, :]
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
        if class_token:
            unm_idx = unm_idx.sort(dim=1)[0]

    def merge(x, mode="mean"):
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
        if distill_token:
            return torch.cat([unm[:, :1], dst[:, :1], unm[:, 1:], dst[:, 1:]], dim=1)
        return torch.cat([unm, dst], dim=1)

    return merge


def _reference_tome(model, pixels, r):
    """ToMe's patched timm forward, with ``model.r = r`` and proportional attention on."""
    class_token, distill_token = model.cls_token is not None, getattr(model, "dist_token", None) is not None
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(pixels))))
    size = None
    for block in model.blocks:
        attn = block.attn
        h = block.norm1(x)
        b, n, c = h.shape
        q, k, v = attn.qkv(h).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-2, -1)) * attn.scale
        if size is not None:
            logits = logits + size.log()[:, None, None, :, 0]
        h = attn.proj((logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c))
        x = x + h
        merge = _reference_matching(k.mean(1), r, class_token, distill_token)
        size = torch.ones_like(x[..., 0, None]) if size is None else size
        x, size = merge(x * size, mode="sum"), merge(size, mode="sum")
        x = x / size
        x = x + block.mlp(block.norm2(x))
    return model.forward_head(model.norm(x))


@cache
def _model(arch, depth=None):
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, **({} if depth is None else {"depth": depth})).eval()


@pytest.fixture(scope="module")
def photos(sample_photos):
    return preprocess_images([image for _, image in sample_photos[:3]], default_image_processor())


@pytest.mark.parametrize(("arch", "depth"), [
    ("vit_base_patch16_224", None),  # ViT-B/16 as it is
    ("deit_base_distilled_patch16_224", 4),  # class + distillation token
], ids=["vit-b16", "deit-distilled"])
@pytest.mark.parametrize("r", [8, 16])
def test_tome_on_timm_equals_the_published_timm_patch(photos, arch, depth, r):
    model = _model(arch, depth)
    with torch.no_grad():
        want = _reference_tome(model, photos, r)
        got = ToMe(model, r=r)(photos)
    n = 196 + model.num_prefix_tokens
    assert got.tokens_per_layer[-1] == n - r * (len(model.blocks) - 1)
    torch.testing.assert_close(got.outputs.logits, want, rtol=1e-5, atol=1e-5)  # seen: 2e-6 on logits up to 2
    assert got.outputs.logits.abs().max() > 1e-2  # not a trivially small output
