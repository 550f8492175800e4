"""Adaptive ToMe (a fractional r, a similarity threshold) alone and behind visual words (vwt+tome).

Equivalences: a share merges what its rounded count would; nothing merged is the unmodified model (or
vwt); merging at a similarity every edge passes is ToMe's cap; each image of a padded batch is itself alone.
"""

import math

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)

from vwt import methods
from vwt.encoders.batching import plan_buckets, plan_buckets_by_cost
from vwt.methods import ToMe
from vwt.methods.adaptive import adaptive_soft_matching, fraction_counts
from vwt.tokenize.tokenizer import VisualWordTokenizer

TOL = {"rtol": 1e-5, "atol": 1e-5}
# 32 px, patch 4: 64 patches (+ CLS), 4 layers; 224 px, patch 16 for the vocabulary of the sample photos
_SMALL = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, image_size=32, patch_size=4)
_WORDS = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, image_size=224, patch_size=16)
FAMILIES = {
    "clip": lambda geometry: CLIPVisionModel(CLIPVisionConfig(intermediate_size=48, **geometry)),
    "vit": lambda geometry: ViTModel(ViTConfig(intermediate_size=48, **geometry)),
    "dinov2": lambda geometry: Dinov2Model(Dinov2Config(mlp_ratio=2, layerscale_value=0.3, **geometry)),
    "siglip": lambda geometry: SiglipVisionModel(SiglipVisionConfig(intermediate_size=48, **geometry)),
}
_MODELS: dict = {}


def _model(family, geometry=None):
    key = (family, "words" if geometry else "small")
    if key not in _MODELS:
        torch.manual_seed(0)
        _MODELS[key] = FAMILIES[family](geometry or _SMALL).eval()
    return _MODELS[key]


def _pixels(batch=3):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_a_share_is_rounded_half_up_per_image():
    mergeable = torch.tensor([5, 15, 25, 64, 0])
    assert fraction_counts(mergeable, 0.1).tolist() == [1, 2, 3, 6, 0]  # 0.5 -> 1, 2.5 -> 3 (not to even)
    assert fraction_counts(mergeable, 0.3).tolist() == [math.floor(0.3 * m + 0.5) for m in mergeable.tolist()]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@torch.no_grad()
def test_a_share_on_equal_length_images_merges_what_the_rounded_count_would(family):
    model, prefix = _model(family), int(family != "siglip")
    counts, rs = [64 + prefix], []
    for _ in range(4):
        rs.append(math.floor(0.15 * (counts[-1] - prefix) + 0.5))
        counts.append(counts[-1] - rs[-1])
    shared = ToMe(model, r=0.15, trace_source=True)(_pixels())
    counted = ToMe(model, r=rs, trace_source=True)(_pixels())
    assert rs == [10, 8, 7, 6] and shared.tokens_per_layer == counted.tokens_per_layer == tuple(counts[:-1])
    torch.testing.assert_close(shared.outputs.last_hidden_state, counted.outputs.last_hidden_state, **TOL)
    assert torch.equal(shared.source, counted.source)


@torch.no_grad()
def test_nothing_merged_adaptively_is_the_unmodified_model():
    model = _model("dinov2")
    expected = model(pixel_values=_pixels()).last_hidden_state
    for options in (dict(r=0.0), dict(similarity=1.0)):  # no key cosine is above 1
        result = ToMe(model, **options)(_pixels())
        assert result.tokens_per_layer == (65,) * 4
        torch.testing.assert_close(result.outputs.last_hidden_state, expected, **TOL)


@torch.no_grad()
def test_a_similarity_every_edge_passes_merges_tomes_cap_in_every_layer():
    model = _model("vit")
    loose = ToMe(model, similarity=-1.0)(_pixels())  # cosines are above -1: half of the mergeable tokens go
    capped = ToMe(model, r=[32, 16, 8, 4])(_pixels())
    assert loose.tokens_per_layer == capped.tokens_per_layer == (65, 33, 17, 9)
    torch.testing.assert_close(loose.outputs.last_hidden_state, capped.outputs.last_hidden_state, **TOL)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@torch.no_grad()
def test_a_similarity_gives_images_different_counts_and_each_the_result_it_gets_alone(family):
    tome = ToMe(_model(family), similarity=0.6, trace_source=True)
    batch = tome(_pixels())
    final = batch.token_sizes.gt(0).sum(dim=1)
    assert final.unique().numel() > 1  # adaptive: the batch came out padded
    assert batch.source.sum(dim=1).eq(1).all()  # each patch in exactly one token; padding holds none
    for i in range(3):
        alone = tome(_pixels()[i:i + 1])
        n = alone.outputs.last_hidden_state.shape[1]
        assert n == final[i] and batch.token_sizes[i, n:].eq(0).all()
        torch.testing.assert_close(batch.outputs.last_hidden_state[i:i + 1, :n], alone.outputs.last_hidden_state, **TOL)
        torch.testing.assert_close(batch.outputs.pooler_output[i:i + 1], alone.outputs.pooler_output, **TOL)


def test_padding_is_never_matched_and_the_merge_keeps_tomes_order():
    # image 0: CLS + 4 real tokens + 2 padding; token 2 is a copy of token 1, token 4 near token 3
    metric = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    valid = torch.tensor([[True] * 5 + [False] * 2])
    merge, merged = adaptive_soft_matching(metric, similarity=0.999, valid=valid)
    x = torch.arange(7.0).reshape(1, 7, 1)
    assert merged.tolist() == [1]  # only 2 -> 1; padding (5, 6) is a copy of 1 but never merges
    torch.testing.assert_close(merge(x, mode="sum")[0, :, 0], torch.tensor([0.0, 4.0, 1.0 + 2.0, 3.0]))
    merge, merged = adaptive_soft_matching(metric, fraction=0.49, valid=valid)
    assert merged.tolist() == [2]  # floor(0.49 * 4 + 0.5) = 2, the cap
    torch.testing.assert_close(merge(x, mode="sum")[0, :, 0], torch.tensor([0.0, 3.0, 3.0 + 4.0]))


@pytest.mark.parametrize(("options", "error", "match"), [
    (dict(r=0.5), ValueError, r"\[0, 0.5\)"),
    (dict(r=-0.1), ValueError, r"\[0, 0.5\)"),
    (dict(r=0.1, schedule="decrease"), ValueError, "constant"),
    (dict(similarity=1.5), ValueError, r"\[-1, 1\]"),
    (dict(r=2, similarity=0.5), ValueError, "not both"),
    (dict(r=0.1, proportional_attention=False), ValueError, "proportional_attention"),
], ids=["half", "negative", "decrease", "cosine", "both", "no-sizes"])
def test_impossible_adaptive_options_are_clear_errors(options, error, match):
    with pytest.raises(error, match=match):
        ToMe(_model("vit"), **options)


# ------------------------------------------------------------------------------ behind visual words
@pytest.fixture(scope="module")
def photos(sample_vocab_dir, sample_photos):
    """Four real photos preprocessed as the vocabulary's tokenizer does (224 px, patch 16)."""
    return VisualWordTokenizer.from_pretrained(sample_vocab_dir)([image for _, image in sample_photos[:4]])["pixel_values"]


def _run(method, model, pixels):
    with torch.no_grad():
        return method.bind(model)(pixels)


def test_vwt_tome_with_a_zero_share_is_vwt(photos, sample_vocab_dir):
    model, options = _model("vit", _WORDS), {"vocab": str(sample_vocab_dir), "threshold": 0.3}
    hybrid = _run(methods.load("vwt+tome", r=0.0, **options), model, photos)
    alone = _run(methods.load("vwt", **options), model, photos)
    assert alone.sequence_lengths.unique().numel() > 1  # merged at the input, padded
    torch.testing.assert_close(hybrid.outputs.pooler_output, alone.outputs.pooler_output, **TOL)


def test_vwt_tome_with_nothing_merged_at_the_input_is_tome_with_that_share(photos, sample_vocab_dir):
    model = _model("vit", _WORDS)
    hybrid = _run(methods.load("vwt+tome", vocab=str(sample_vocab_dir), threshold=-1.0, r=0.2), model, photos)
    tome = _run(methods.load("tome", r=0.2), model, photos)
    assert hybrid.tokens_per_layer == tome.tokens_per_layer == (197, 158, 127)  # 39, then 31 of 157
    torch.testing.assert_close(hybrid.outputs.last_hidden_state, tome.outputs.last_hidden_state, **TOL)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("knob", [dict(r=0.2), dict(similarity=0.8)], ids=["share", "similarity"])
def test_each_image_of_an_adaptive_hybrid_batch_is_itself_alone(photos, sample_vocab_dir, family, knob):
    model = _model(family, _WORDS)
    method = methods.load("vwt+tome", vocab=str(sample_vocab_dir), threshold=0.3, connected=True, **knob)
    batch = _run(method, model, photos)
    assert batch.sequence_lengths.unique().numel() > 1  # the input is padded
    patches = 196 + (family != "siglip")
    for i in range(len(photos)):
        alone = _run(method, model, photos[i:i + 1])
        torch.testing.assert_close(batch.outputs.pooler_output[i:i + 1], alone.outputs.pooler_output, **TOL)
        n = alone.token_sizes.shape[1]
        assert torch.equal(batch.token_sizes[i, :n], alone.token_sizes[0]) and batch.token_sizes[i, n:].eq(0).all()
        assert int(alone.token_sizes.sum()) == patches  # every patch once, CLS 1


def test_protected_prefix_tokens_stay_first_in_their_order():
    # CLS (0, in A) and a distillation token (1, in B) are protected: token 2 copies token 1 but may not merge
    # into it; token 4 copies token 3 and merges; token 5 is too far from 2
    metric = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.8]]])
    merge, merged = adaptive_soft_matching(metric, similarity=0.999, protect_cls=2)
    x = torch.arange(6.0).reshape(1, 6, 1)
    assert merged.tolist() == [1]
    torch.testing.assert_close(merge(x, mode="sum")[0, :, 0], torch.tensor([0.0, 1.0, 2.0, 3.0 + 4.0, 5.0]))


# ------------------------------------------------------------------------------ the hybrid's batching
@pytest.fixture(scope="module")
def six_photos(sample_vocab_dir, sample_photos):
    """Six real photos (224 px, patch 16): ``"auto"`` runs them as two buckets of three."""
    return VisualWordTokenizer.from_pretrained(sample_vocab_dir)([image for _, image in sample_photos[:6]])["pixel_values"]


@pytest.mark.parametrize("family", ["dinov2", "clip"])
@pytest.mark.parametrize("batching", ["auto", "pad", "bucket"])
def test_each_image_of_a_hybrid_batch_is_itself_alone_in_every_batching(six_photos, sample_vocab_dir, family, batching):
    model = _model(family, _WORDS)
    options = dict(vocab=str(sample_vocab_dir), threshold=0.3, connected=True, r=0.2)
    batch = _run(methods.load("vwt+tome", batching=batching, **options), model, six_photos)
    lengths = batch.sequence_lengths
    assert lengths.unique().numel() > 2  # variable lengths: buckets differ from one padded batch
    alone = [_run(methods.load("vwt+tome", **options), model, six_photos[i:i + 1]) for i in range(len(six_photos))]
    for i, result in enumerate(alone):
        torch.testing.assert_close(batch.outputs.pooler_output[i:i + 1], result.outputs.pooler_output, **TOL)
        n = result.token_sizes.shape[1]
        assert torch.equal(batch.token_sizes[i, :n], result.token_sizes[0]) and batch.token_sizes[i, n:].eq(0).all()
    # the compute reported: the longest image for "pad", each bucket's longest in the bucketed modes ("auto"
    # on CPU plans its buckets by cost)
    groups = {"pad": [range(6)], "bucket": plan_buckets(lengths, 4), "auto": plan_buckets_by_cost(lengths)}[batching]
    assert batching == "pad" or len(groups) > 1
    expected = [sum(len(g) * max(alone[i].tokens_per_layer[layer] for i in g) for g in groups) / 6
                for layer in range(len(batch.tokens_per_layer))]
    assert batch.tokens_per_layer == pytest.approx(expected)


@pytest.mark.parametrize("batching", ["pack", "ragged", "stream"])
def test_the_hybrid_refuses_batchings_that_do_not_keep_images_apart_for_tome(sample_vocab_dir, batching):
    with pytest.raises(ValueError, match="batching"):
        methods.load("vwt+tome", vocab=str(sample_vocab_dir), r=0.1, batching=batching).bind(_model("vit", _WORDS))
