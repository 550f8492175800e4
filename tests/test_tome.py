"""ToMe on tiny random CLIP / ViT / DINOv2: exactness at r=0, schedules, the merge math, proportional attention."""

from functools import cache

import pytest
import torch
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

from vwt.encoders import EncoderAdapter
from vwt.methods import (
    ToMe,
    ToMeConfig,
    attend_proportionally,
    bipartite_soft_matching,
    merge_source,
    merge_wavg,
    schedule_r,
    token_counts,
)

# 32 px, patch 4: 64 patches + CLS = 65 tokens, 4 layers
_TINY = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, image_size=32, patch_size=4)


def _clip():
    return CLIPVisionModel(CLIPVisionConfig(intermediate_size=48, **_TINY))


def _clip_full():
    text = CLIPTextConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=8)
    vision = CLIPVisionConfig(intermediate_size=48, **_TINY)
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16))


def _vit():
    return ViTModel(ViTConfig(intermediate_size=48, **_TINY))


def _vit_classifier():
    return ViTForImageClassification(ViTConfig(intermediate_size=48, num_labels=5, **_TINY))


def _dinov2():
    return Dinov2Model(Dinov2Config(mlp_ratio=2, layerscale_value=0.3, **_TINY))


def _siglip():
    return SiglipVisionModel(SiglipVisionConfig(intermediate_size=48, **_TINY))


MODELS = {"clip": _clip, "vit": _vit, "dinov2": _dinov2}  # with CLS: 65 tokens


@cache
def _build(make):
    """One model per family for the whole module (ToMe never changes a model)."""
    torch.manual_seed(0)
    return make().eval()


def _pixels(batch=2, size=32):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------ exactness at r = 0
@pytest.mark.parametrize("make", [_clip, _vit, _vit_classifier, _dinov2, _siglip],
                         ids=["clip", "vit", "vit-cls", "dinov2", "siglip"])
@torch.no_grad()
def test_r_zero_reproduces_the_unmodified_model(make):
    model = _build(make)
    pixels = _pixels()
    expected = model(pixel_values=pixels)
    result = ToMe(model, r=0)(pixels)
    got = result.outputs
    for name in ("last_hidden_state", "pooler_output", "logits"):
        if getattr(expected, name, None) is not None:
            torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=1e-5, atol=1e-5)
    assert result.tokens_per_layer == (65 - (make is _siglip),) * 4


@torch.no_grad()
def test_r_zero_reproduces_clip_zero_shot_logits():
    model = _build(_clip_full)
    pixels, input_ids = _pixels(), torch.tensor([[1, 5, 7, 2], [1, 9, 2, 2]])
    expected = model(pixel_values=pixels, input_ids=input_ids)
    got = ToMe(model, r=0)(pixels, input_ids=input_ids).outputs
    torch.testing.assert_close(got.logits_per_image, expected.logits_per_image, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ schedules
@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize(("options", "counts"), [
    (dict(r=8), [65, 57, 49, 41, 33]),
    (dict(r=[40, 0, 5]), [65, 33, 33, 28, 28]),  # 40 is capped at half the 64 mergeable tokens
    (dict(r=8, schedule="decrease"), [65, 53, 44, 38, 34]),  # r per layer 12, 9, 6, 4
], ids=["int", "list", "decrease"])
@torch.no_grad()
def test_token_counts_per_layer_follow_the_schedule(family, options, counts):
    tome = ToMe(_build(MODELS[family]), **options)
    result = tome(_pixels())
    assert result.tokens_per_layer == tuple(counts[:-1])
    assert result.outputs.last_hidden_state.shape == (2, counts[-1], 32) == (2, *result.token_sizes.shape[1:], 32)
    assert token_counts(65, tome.r_per_layer) == counts


def test_schedules_match_the_tome_repository_parse_r():
    assert schedule_r(8, 4) == [8, 8, 8, 8]
    assert schedule_r(8, 4, "decrease") == [12, 9, 6, 4]
    assert schedule_r(16, 12, "decrease", -0.5) == [24, 22, 21, 19, 18, 16, 15, 13, 12, 10, 9, 8]
    assert schedule_r([3, 1], 4) == [3, 1, 0, 0]
    assert token_counts(10, [4, 4, 4], protect_cls=False) == [10, 6, 3, 2]


@torch.no_grad()
def test_a_batch_merges_each_image_as_it_would_alone():
    model = _build(_dinov2)
    pixels = _pixels(3)
    tome = ToMe(model, r=8)
    batched = tome(pixels).outputs.last_hidden_state
    alone = tome(pixels[1:2]).outputs.last_hidden_state  # the same object again: nothing of a call is kept
    torch.testing.assert_close(batched[1:2], alone, rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("r", [8, 0.1], ids=["int", "share"])
def test_flex_attention_gives_what_sdpa_with_the_float_bias_gives(r):
    # the same proportional attention through either kernel (an adaptive share pads the batch: size 0 keys)
    model, pixels = _build(_dinov2), _pixels(3)
    sdpa = ToMe(model, r=r, attention_kernel="sdpa")(pixels)
    flex = ToMe(model, r=r, attention_kernel="flex")(pixels)
    torch.testing.assert_close(flex.outputs.last_hidden_state, sdpa.outputs.last_hidden_state, rtol=1e-5, atol=1e-5)
    assert flex.tokens_per_layer == sdpa.tokens_per_layer
    with pytest.raises(ValueError, match="attention_kernel"):
        ToMe(model, r=r, attention_kernel="flash")


@torch.no_grad()
def test_running_tome_leaves_the_model_untouched():
    model = _build(_vit)
    pixels = _pixels()
    before = model(pixel_values=pixels).last_hidden_state
    ToMe(model, r=8)(pixels)
    assert type(model) is ViTModel
    torch.testing.assert_close(model(pixel_values=pixels).last_hidden_state, before, rtol=0, atol=0)


# ------------------------------------------------------------------------------ the merge by hand
def _hand_metric():
    # token 0 is CLS (identical to token 1, so it would merge first if it were not protected);
    # A = tokens 0, 2, 4 and B = tokens 1, 3; token 2 is closest to 1, token 4 to 3, a little less so.
    return torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.2, 1.0]]])


def test_hand_example_merges_the_most_similar_pair_by_size_weighted_average():
    x = torch.tensor([[[0.0], [10.0], [20.0], [30.0], [40.0]]])
    size = torch.tensor([[[1.0], [1.0], [3.0], [1.0], [2.0]]])
    merge, unmerge = bipartite_soft_matching(_hand_metric(), r=1, protect_cls=True)
    merged, merged_size = merge_wavg(merge, x, size)
    # unmerged A in order (CLS, token 4), then B (token 1 holding token 2, token 3)
    torch.testing.assert_close(merged[0, :, 0], torch.tensor([0.0, 40.0, (10 * 1 + 20 * 3) / 4, 30.0]))
    torch.testing.assert_close(merged_size[0, :, 0], torch.tensor([1.0, 2.0, 4.0, 1.0]))
    torch.testing.assert_close(unmerge(merged)[0, :, 0], torch.tensor([0.0, 17.5, 17.5, 30.0, 40.0]))

    merge, _ = bipartite_soft_matching(_hand_metric(), r=2, protect_cls=True)
    merged, merged_size = merge_wavg(merge, x, size)
    torch.testing.assert_close(merged[0, :, 0], torch.tensor([0.0, 17.5, (30 * 1 + 40 * 2) / 3]))
    torch.testing.assert_close(merged_size[0, :, 0], torch.tensor([1.0, 4.0, 3.0]))


def test_hand_example_merges_cls_when_it_is_not_protected_and_caps_r_at_half():
    x = torch.arange(5.0).reshape(1, 5, 1) * 10
    merge, _ = bipartite_soft_matching(_hand_metric(), r=1, protect_cls=False)
    merged, merged_size = merge_wavg(merge, x)
    torch.testing.assert_close(merged[0, :, 0], torch.tensor([20.0, 40.0, 5.0, 30.0]))
    torch.testing.assert_close(merged_size[0, :, 0], torch.tensor([1.0, 1.0, 2.0, 1.0]))
    merge, _ = bipartite_soft_matching(_hand_metric(), r=99, protect_cls=True)
    assert merge(x).shape == (1, 3, 1)  # at most half of the 4 mergeable tokens
    source = merge_source(merge, torch.eye(5).expand(1, 5, 5))
    assert source.sum(dim=1).eq(1).all()


# ------------------------------------------------------------------------------ proportional attention
def test_proportional_attention_adds_log_size_to_the_logits():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=g) for _ in range(3))
    size = torch.randint(1, 5, (2, 6, 1), generator=g).float()
    expected = torch.softmax(q @ k.transpose(-1, -2) * 0.5 + size.log()[:, None, None, :, 0], dim=-1) @ v
    torch.testing.assert_close(attend_proportionally(q, k, v, size, scale=0.5), expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_the_last_layer_after_merging_is_proportional_attention_written_out_by_hand():
    model = _build(_clip)
    layer = model.encoder.layers[-1]
    captured = {}
    handle = layer.layer_norm1.register_forward_pre_hook(lambda module, args: captured.update(x=args[0]))
    try:
        result = ToMe(model, r=[20, 10])(_pixels())  # the last two layers merge nothing: final sizes are the last layer's
        out = result.outputs
    finally:
        handle.remove()
    x, size = captured["x"], result.token_sizes.float()
    assert x.shape == (2, 35, 32) and size.max() > 1
    attn, (b, t, d), heads = layer.self_attn, x.shape, 2
    h = layer.layer_norm1(x)
    q, k, v = ((h @ proj.weight.T + proj.bias).view(b, t, heads, d // heads).transpose(1, 2)
               for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    logits = q @ k.transpose(-1, -2) * (d // heads) ** -0.5 + size.log()[:, None, None, :]
    a = (torch.softmax(logits, dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
    x = x + a @ attn.out_proj.weight.T + attn.out_proj.bias
    expected = x + layer.mlp(layer.layer_norm2(x))
    torch.testing.assert_close(out.last_hidden_state, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ source tracking
@pytest.mark.parametrize("family", sorted(MODELS))
@torch.no_grad()
def test_every_patch_lands_in_exactly_one_final_token(family):
    result = ToMe(_build(MODELS[family]), r=8, schedule="decrease", trace_source=True)(_pixels())
    out, source, sizes = result.outputs, result.source, result.token_sizes
    assert source.shape == (2, out.last_hidden_state.shape[1], 64)
    assert source.sum(dim=1).eq(1).all()  # each patch in one token
    assert source[:, 0].eq(0).all() and sizes[:, 0].eq(1).all()  # CLS holds no patch and stays alone
    torch.testing.assert_close(sizes[:, 1:], source[:, 1:].sum(dim=-1).long())
    assert sizes.sum(dim=1).eq(65).all()


@torch.no_grad()
def test_siglip_has_no_cls_so_every_token_can_merge():
    result = ToMe(_build(_siglip), r=[40, 8], trace_source=True)(_pixels())
    out = result.outputs
    assert result.tokens_per_layer == (64, 32, 24, 24)  # 40 capped at half of all 64 tokens
    assert out.last_hidden_state.shape == (2, 24, 32) and out.pooler_output.shape == (2, 32)
    assert result.source.sum(dim=1).eq(1).all()
    torch.testing.assert_close(result.token_sizes, result.source.sum(dim=-1).long())


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(("options", "error", "match"), [
    (dict(r=-1), ValueError, ">= 0"),
    (dict(r=[1, -2]), ValueError, ">= 0"),
    (dict(r=[1, 1, 1, 1, 1]), ValueError, "5 layers but the model has 4"),
    (dict(r=16), ValueError, "at most 63 merges"),
    (dict(r=[64]), ValueError, "at most 63 merges"),
    (dict(r=[2, 2], schedule="decrease"), ValueError, "needs an int r"),
    (dict(r=2, schedule="cosine"), ValueError, "'constant' or 'decrease'"),
    (dict(r=2, schedule="decrease", inflect=0.5), ValueError, "inflect"),
    (dict(r=1.5), ValueError, r"\[0, 0.5\)"),  # a float is a share of the tokens
    (dict(r=True), TypeError, "int"),
], ids=lambda value: str(value) if not isinstance(value, type) else value.__name__)
def test_impossible_r_is_a_clear_error(options, error, match):
    model = _build(_vit)
    with pytest.raises(error, match=match):
        ToMe(model, **options)


def test_r_that_fits_the_configured_size_but_not_a_smaller_image_fails_at_call():
    tome = ToMe(_build(_dinov2), r=5)  # 20 merges: fine for 64 patches, not for the 16 of a 16 px image
    with pytest.raises(ValueError, match="16 patches"):
        tome(_pixels(size=16))


def test_config_and_r_together_are_an_error():
    with pytest.raises(ValueError, match="either r"):
        ToMe(_build(_vit), r=2, config=ToMeConfig(r=2))
    assert ToMe(_build(_vit), config=ToMeConfig(r=(2, 1))).r_per_layer == [2, 1, 0, 0]


def test_unsupported_models_are_a_clear_error():
    with pytest.raises(TypeError, match="unsupported model class Linear"):
        ToMe(nn.Linear(2, 2), r=1)

    class OtherAdapter(EncoderAdapter):
        vision = None
        layers = (nn.Identity(),)

        def embed(self, pixel_values, interpolate_pos_encoding=False):
            raise NotImplementedError

        def outputs(self, hidden, attention_mask, **kwargs):
            raise NotImplementedError

    with pytest.raises(TypeError, match="ToMe cannot drive Linear: OtherAdapter does not expose the pieces of Identity"):
        ToMe(OtherAdapter(nn.Linear(2, 2)), r=1)
