"""Tampered batches are clear errors, at the tokenizer and at the model, never silently used."""

import pytest
import torch
from transformers import ViTConfig, ViTModel

from vwt import VisualVocabulary, VocabularyConfig
from vwt.encoders import VisualWordModel
from vwt.preprocess import default_image_processor, preprocess_config
from vwt.tokenize.intra import IntraImageTokenizer
from vwt.tokenize.tokenizer import VisualWordTokenizer
from vwt.validate import check_tokens

P, SIZE = 8, 32


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       image_size=SIZE, patch_size=P)
    return VisualWordModel(ViTModel(config).eval())


@pytest.fixture(scope="module")
def batch():
    """Three images with 1, some, and 16 tokens: padding in the first two."""
    config = VocabularyConfig(k=4, patch_size=P, num_channels=3, preprocess=preprocess_config(default_image_processor()))
    words = torch.randn(4, 3 * P * P, generator=torch.Generator().manual_seed(1))
    words[0] = 1.0
    pixels = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    pixels[0] = 0.5
    pixels[1, :, : SIZE // 2] = 0.5
    out = VisualWordTokenizer(VisualVocabulary(words, config), threshold=0.05)(pixel_values=pixels)
    assert out["num_tokens"].tolist()[0] == 1 and out["num_tokens"].tolist()[2] == 16
    return {key: out[key] for key in ("pixel_values", "patch_to_token", "attention_mask")}


def _with(batch, **changes):
    return {**batch, **changes}


def test_the_untampered_batch_runs(model, batch):
    with torch.no_grad():
        assert model(batch).last_hidden_state.shape[:2] == batch["attention_mask"].shape


def test_an_attention_mask_one_column_short_is_an_error(model, batch):
    with pytest.raises(ValueError, match=r"patch_to_token points at token 15 but attention_mask \(3, 16\) has room for 15"):
        model(_with(batch, attention_mask=batch["attention_mask"][:, :-1]))


def test_an_attention_mask_with_cls_zeroed_is_an_error(model, batch):
    mask = batch["attention_mask"].clone()
    mask[1, 0] = 0
    with pytest.raises(ValueError, match=r"attention_mask\[:, 0\] is the CLS token and must be 1; it is 0 for image 1"):
        model(_with(batch, attention_mask=mask))


def test_an_attention_mask_with_extra_columns_is_an_error(model, batch):
    mask = torch.cat([batch["attention_mask"], torch.ones(3, 2, dtype=torch.long)], dim=1)
    with pytest.raises(ValueError, match=r"attention_mask must be 1s then 0s \(padding last\); image 0 is not"):
        model(_with(batch, attention_mask=mask))
    mask[:2, -2:] = 0  # extra columns that are 1 only for the image without padding: two empty tokens
    with pytest.raises(ValueError, match="image 2: token 16 is 1 in attention_mask but no patch lands in it"):
        model(_with(batch, attention_mask=mask))
    mask[2, -2:] = 0  # extra padding columns are harmless (float tolerance: only the matmul shapes differ)
    with torch.no_grad():
        torch.testing.assert_close(model(_with(batch, attention_mask=mask)).pooler_output, model(batch).pooler_output)


def test_an_attention_mask_that_drops_a_token_is_an_error(model, batch):
    mask = batch["attention_mask"].clone()
    mask[2, -1] = 0
    with pytest.raises(ValueError, match="image 2: token 15 has patches but is 0 in attention_mask"):
        model(_with(batch, attention_mask=mask))


def test_an_attention_mask_with_values_other_than_0_and_1_or_float_is_an_error(model, batch):
    mask = batch["attention_mask"].clone()
    mask[2, 5] = 2
    with pytest.raises(ValueError, match=r"only 0 and 1, found values \[0, 1, 2\]"):
        model(_with(batch, attention_mask=mask))
    with pytest.raises(TypeError, match="attention_mask must be an integer or bool tensor of 0/1, got torch.float32"):
        model(_with(batch, attention_mask=batch["attention_mask"].float()))


@pytest.mark.parametrize(("value", "message"), [
    (-7, "patch_to_token has -7: token indices are >= 0, and -1 marks a dropped patch"),
    (10000, "patch_to_token points at token 10000"),
])
def test_patch_to_token_out_of_range_is_an_error(model, batch, value, message):
    patch_to_token = batch["patch_to_token"].clone()
    patch_to_token[2, 3] = value
    with pytest.raises(ValueError, match=message):
        model(_with(batch, patch_to_token=patch_to_token))


def test_patch_to_token_as_floats_is_an_error(model, batch):
    with pytest.raises(TypeError, match="patch_to_token must be an integer tensor.*got torch.float32"):
        model(_with(batch, patch_to_token=batch["patch_to_token"].float()))


def test_integer_pixel_values_are_an_error_at_the_model_and_the_tokenizer(model, batch):
    as_int = (batch["pixel_values"] * 100).long()
    with pytest.raises(TypeError, match="pixel_values must be floating point.*got torch.int64"):
        model(_with(batch, pixel_values=as_int))
    with pytest.raises(TypeError, match="pixel_values must be floating point.*got torch.int64"):
        IntraImageTokenizer(0.5, P)(pixel_values=as_int)


def test_finite_but_huge_pixel_values_are_called_out_of_range_not_nan(model, batch):
    huge = torch.full_like(batch["pixel_values"], 1e35)  # finite; their float32 sum overflows to inf
    with pytest.raises(ValueError, match=r"pixel_values reach 1e\+35, far outside normalized pixel values"):
        IntraImageTokenizer(0.5, P)(pixel_values=huge)
    with pytest.raises(ValueError, match=r"pixel_values reach 1e\+35"):
        model(_with(batch, pixel_values=huge))


def test_nan_pixel_values_passed_straight_to_the_model_are_an_error(model, batch):
    pixels = batch["pixel_values"].clone()
    pixels[1, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="pixel_values contain NaN or infinite values"):
        model(_with(batch, pixel_values=pixels))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(pixel_values=pixels)  # plain pixel values, no tokenizer output


def test_token_sizes_must_be_positive_and_at_most_the_patch_count_of_each_token_and_zero_on_padding(batch):
    patch_to_token, mask = batch["patch_to_token"], batch["attention_mask"]
    counts = torch.zeros(3, mask.shape[1] - 1, dtype=torch.long).scatter_add_(
        1, patch_to_token.clamp(min=0), (patch_to_token >= 0).long())
    check_tokens(patch_to_token, mask, counts)  # consistent: no error
    check_tokens(patch_to_token, mask, (counts > 0).long())  # all ones (size-aware attention off): allowed
    for image, token, change in ((1, 0, 1), (2, 3, -int(counts[2, 3])), (0, 5, 1)):  # too big, zero, on padding
        wrong = counts.clone()
        wrong[image, token] += change
        with pytest.raises(ValueError, match=f"token_sizes disagree with patch_to_token for image {image}"):
            check_tokens(patch_to_token, mask, wrong)
    with pytest.raises(ValueError, match=r"token_sizes must be \[B, T\]"):
        check_tokens(patch_to_token, mask, counts[:, :-1])
    with pytest.raises(TypeError, match="token_sizes must be an integer tensor"):
        check_tokens(patch_to_token, mask, counts.float())


def test_a_mask_derived_from_patch_to_token_needs_every_token_up_to_the_largest(batch):
    patch_to_token = batch["patch_to_token"].clone()
    patch_to_token[0] = torch.where(patch_to_token[0] == 0, 2, patch_to_token[0])  # tokens 0 and 1 empty
    with pytest.raises(ValueError, match="image 0: token 0 is 1 in attention_mask but no patch lands in it"):
        check_tokens(patch_to_token)
