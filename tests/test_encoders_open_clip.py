"""open_clip image towers through vwt, on tiny random configs (no weights): ``encode_image`` when nothing
is merged, each image its own result in a merged batch, attention pooling, ToMe and ONNX.

Skipped where open_clip does not import (it needs torchvision; see the README's "timm and open_clip")."""

import pytest
import torch

try:
    open_clip = pytest.importorskip("open_clip")
except RuntimeError as error:  # e.g. "operator torchvision::nms does not exist" next to the CPU torch build
    pytest.skip(f"open_clip does not import here: {error}", allow_module_level=True)

from open_clip.transformer import VisionTransformer

from vwt import VisualVocabulary, VocabularyConfig
from vwt.encoders import VisualWordModel, adapter_for
from vwt.encoders.batching import BATCHING
from vwt.methods import ToMe
from vwt.preprocess import default_image_processor, preprocess_config
from vwt.tokenize.intra import IntraImageTokenizer
from vwt.tokenize.tokenizer import VisualWordTokenizer

P, SIZE = 8, 32
TOWER = {"image_size": SIZE, "patch_size": P, "width": 32, "layers": 2, "heads": 4, "mlp_ratio": 2.0,
         "output_dim": 16, "output_tokens": True}
TOWERS = {
    "cls-token": {},
    "avg-layerscale-ln-after-pool": {"pool_type": "avg", "ls_init_value": 0.1, "final_ln_after_pool": True},
    "coca-attention-pool": {"attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 4},
}


def _clip():
    """A whole open_clip ``CLIP`` (ViT-B-16's architecture, shrunk), built from its model config."""
    torch.manual_seed(0)
    return open_clip.create_model(
        "ViT-B-16", pretrained=None, embed_dim=16,
        vision_cfg={"image_size": SIZE, "patch_size": P, "width": 32, "layers": 2, "head_width": 8},
        text_cfg={"width": 32, "layers": 1, "heads": 4}).eval()


def _model(name):
    if name == "clip":
        return _clip()
    torch.manual_seed(0)
    return VisionTransformer(**TOWER, **TOWERS[name]).eval()


NAMES = ["clip", *sorted(TOWERS)]


def _vocab(k=6):
    config = VocabularyConfig(k=k, patch_size=P, num_channels=3, preprocess=preprocess_config(default_image_processor()))
    words = torch.randn(k, 3 * P * P, generator=torch.Generator().manual_seed(1))
    words[0] = 1.0
    return VisualVocabulary(words, config)


def _pixels(batch=3):
    pixels = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    pixels[0] = 0.5
    pixels[1, :, : SIZE // 2] = 0.5
    return pixels


def _reference(model, pixels):
    """``encode_image`` and, for a tower with ``output_tokens``, its tokens."""
    with torch.no_grad():
        if name_of(model) == "clip":
            return model.encode_image(pixels), None
        return model(pixels)


def name_of(model):
    return "clip" if hasattr(model, "visual") else "tower"


def _call(model, batch, **kwargs):
    with torch.no_grad():
        return VisualWordModel(model, **kwargs)(batch)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("tokenizer", [None, VisualWordTokenizer(_vocab(), threshold=-1.0), IntraImageTokenizer(1.0, P)],
                         ids=["pixels", "vwt-threshold-minus-one", "intra-keep-all"])
def test_nothing_merged_reproduces_encode_image(name, tokenizer):
    model, pixels = _model(name), _pixels()
    batch = {"pixel_values": pixels} if tokenizer is None else tokenizer(pixel_values=pixels)
    got = _call(model, batch)
    embeds, tokens = _reference(model, pixels)
    torch.testing.assert_close(got.image_embeds, embeds, rtol=1e-5, atol=1e-5)
    if tokens is not None and not model.attn_pool:  # the tower's tokens: every token after CLS
        torch.testing.assert_close(got.last_hidden_state[:, 1:], tokens, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batching", BATCHING)
def test_in_a_merged_batch_each_image_gets_its_own_embedding(name, batching):
    model, pixels = _model(name), _pixels()
    tokenizer = VisualWordTokenizer(_vocab(), threshold=0.1)
    batch = tokenizer(pixel_values=pixels)
    assert len(set(batch["num_tokens"].tolist())) > 1 and (batch["token_sizes"] > 1).any()
    together = _call(model, batch, batching=batching)
    for i in range(len(pixels)):
        alone = _call(model, tokenizer(pixel_values=pixels[i : i + 1]))
        n = 1 + int(batch["num_tokens"][i])
        torch.testing.assert_close(together.image_embeds[i : i + 1], alone.image_embeds, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.last_hidden_state[i : i + 1, :n], alone.last_hidden_state, rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("name", ["clip", "avg-layerscale-ln-after-pool"])
def test_tome_on_an_open_clip_tower_is_exact_at_r_zero_and_merges_each_image_as_alone(name):
    model, pixels = _model(name), _pixels()
    with torch.no_grad():
        untouched = ToMe(model, r=0)(pixels).outputs
        merged = ToMe(model, r=3)(pixels)
        alone = [ToMe(model, r=3)(pixels[i : i + 1]).outputs for i in range(len(pixels))]
    torch.testing.assert_close(untouched.image_embeds, _reference(model, pixels)[0], rtol=1e-5, atol=1e-5)
    assert merged.tokens_per_layer == (17, 14)
    for i, out in enumerate(alone):
        torch.testing.assert_close(merged.outputs.image_embeds[i : i + 1], out.image_embeds, rtol=1e-4, atol=1e-5)


def test_the_adapter_finds_the_tower_inside_a_clip_model_and_reports_its_geometry():
    adapter = adapter_for(_clip())
    assert (adapter.patch_size, adapter.image_size, adapter.num_prefix_tokens) == (P, (SIZE, SIZE), 1)
    assert len(adapter.layers) == 2


def test_onnxruntime_reproduces_an_open_clip_model(tmp_path):
    pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from vwt.encoders.export import onnx, onnx_inputs

    model = _clip()
    tokenizer = VisualWordTokenizer(_vocab(), threshold=0.5)
    names = onnx(VisualWordModel(model), tmp_path / "clip.onnx", tokenizer(pixel_values=_pixels(2)),
                 output_names=["image_embeds"])
    batch = tokenizer(pixel_values=_pixels(3)[[2, 1, 0]])
    session = ort.InferenceSession(str(tmp_path / "clip.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, onnx_inputs(batch))
    with torch.no_grad():
        expected = VisualWordModel(model)(batch).image_embeds
    assert names == ["image_embeds"]
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=1e-4)
