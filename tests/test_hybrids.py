"""vwt+tome: visual words at the input, ToMe in the layers; each knob at zero is one of its parts."""

import pytest
import torch
from transformers import ViTConfig, ViTModel

from vwt import methods
from vwt.tokenize.tokenizer import VisualWordTokenizer

# Two code paths (the model's own layers with an additive mask vs ToMe's written-out attention) doing
# the same float32 arithmetic in a different order: rounding only, far below any merge's effect (> 1e-2).
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                       image_size=224, patch_size=16)
    return ViTModel(config).eval()


@pytest.fixture(scope="module")
def photos(sample_vocab_dir, sample_photos):
    """Four real photos preprocessed as the vocabulary's tokenizer does (CLIP, 224 px)."""
    tokenizer = VisualWordTokenizer.from_pretrained(sample_vocab_dir)
    return tokenizer([image for _, image in sample_photos[:4]])["pixel_values"]


def _run(method, model, pixels):
    with torch.no_grad():
        return method.bind(model)(pixels)


@pytest.mark.parametrize("connected", [False, True])
def test_vwt_tome_with_r_zero_is_vwt(model, photos, sample_vocab_dir, connected):
    options = {"vocab": str(sample_vocab_dir), "threshold": 0.3, "connected": connected}
    hybrid = _run(methods.load("vwt+tome", r=0, **options), model, photos)
    alone = _run(methods.load("vwt", **options), model, photos)
    assert alone.sequence_lengths.min() < 197 and alone.sequence_lengths.unique().numel() > 1  # merged, padded
    assert hybrid.sequence_lengths.tolist() == alone.sequence_lengths.tolist()
    torch.testing.assert_close(hybrid.outputs.pooler_output, alone.outputs.pooler_output, **TOL)


def test_vwt_tome_with_nothing_merged_at_the_input_is_tome(model, photos, sample_vocab_dir):
    hybrid = _run(methods.load("vwt+tome", vocab=str(sample_vocab_dir), threshold=-1.0, r=20), model, photos)
    tome = _run(methods.load("tome", r=20), model, photos)
    assert hybrid.tokens_per_layer == tome.tokens_per_layer == (197, 177, 157)
    torch.testing.assert_close(hybrid.outputs.last_hidden_state, tome.outputs.last_hidden_state, **TOL)


def test_a_padded_hybrid_batch_gives_each_image_its_result_alone(model, photos, sample_vocab_dir):
    """Padding (size 0) is invisible to attention and never takes part in a merge."""
    method = methods.load("vwt+tome", vocab=str(sample_vocab_dir), threshold=0.3, connected=True, r=10)
    batch = _run(method, model, photos)
    assert batch.sequence_lengths.unique().numel() > 1  # the batch is padded
    for i in range(len(photos)):
        alone = _run(method, model, photos[i:i + 1])
        torch.testing.assert_close(batch.outputs.pooler_output[i:i + 1], alone.outputs.pooler_output, **TOL)
        assert int(batch.token_sizes[i].sum()) == int(alone.token_sizes.sum()) == 197  # every patch once, CLS 1


def test_the_hybrid_merges_more_than_either_part(model, photos, sample_vocab_dir):
    options = {"vocab": str(sample_vocab_dir), "threshold": 0.3}
    hybrid = _run(methods.load("vwt+tome", r=10, **options), model, photos[:1])
    alone = _run(methods.load("vwt", **options), model, photos[:1])
    assert hybrid.tokens_per_layer[0] == alone.tokens_per_layer[0]
    assert hybrid.tokens_per_layer[-1] == hybrid.tokens_per_layer[0] - 20


def test_hybrid_needs_proportional_attention(model, sample_vocab_dir):
    with pytest.raises(ValueError, match="proportional_attention"):
        methods.load("vwt+tome", vocab=str(sample_vocab_dir), r=2, proportional_attention=False).bind(model)
