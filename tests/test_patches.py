import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, ViTConfig, ViTModel

from vwt.patches import patch_variance, patchify


def _tiny_clip():
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    return CLIPVisionModel(config).embeddings.patch_embedding


def _tiny_vit():
    config = ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8
    )
    return ViTModel(config).embeddings.patch_embeddings.projection


@pytest.mark.parametrize("make_conv", [_tiny_clip, _tiny_vit], ids=["clip", "vit"])
def test_patchify_order_matches_the_models_conv_patch_embedding(make_conv):
    torch.manual_seed(0)
    conv = make_conv()
    pixels = torch.randn(2, 3, 32, 48)
    expected = conv(pixels).flatten(2).transpose(1, 2)  # [B, N, D] in raster order
    weight = conv.weight.reshape(conv.out_channels, -1)
    bias = conv.bias if conv.bias is not None else 0.0
    got = patchify(pixels, 8) @ weight.T + bias
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_patchify_shape_and_first_patch_is_channel_major():
    pixels = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    patches = patchify(pixels, 2)
    assert patches.shape == (2, 6, 12)
    torch.testing.assert_close(patches[1, 4], pixels[1, :, 2:4, 2:4].reshape(-1))


def test_patchify_rejects_sizes_that_do_not_tile():
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        patchify(torch.zeros(1, 3, 30, 32), 8)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        patchify(torch.zeros(3, 32, 32), 8)


def test_patch_variance_is_zero_for_flat_patches_and_positive_for_textured_ones():
    pixels = torch.zeros(1, 3, 4, 8)
    pixels[..., 4:] = torch.randn(1, 3, 4, 4)
    variance = patch_variance(patchify(pixels, 4))
    assert variance[0, 0] == 0
    assert variance[0, 1] > 0
