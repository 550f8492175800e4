"""timm Vision Transformers through vwt, on tiny random configs (no weights): the model's own outputs when
nothing is merged, each image its own result in a merged batch, ToMe, vwt+tome, compile and ONNX.

Skipped where timm does not import (it needs torchvision, which needs the torch build it was made for;
see the README's "timm and open_clip" section)."""

import pytest
import torch

try:
    timm = pytest.importorskip("timm")
except RuntimeError as error:  # e.g. "operator torchvision::nms does not exist" next to the CPU torch build
    pytest.skip(f"timm does not import here: {error}", allow_module_level=True)

from vwt import VisualVocabulary, VocabularyConfig
from vwt.encoders import VisualWordModel, adapter_for
from vwt.encoders.batching import BATCHING
from vwt.encoders.masks import sequence_mask
from vwt.methods import ToMe
from vwt.methods.hybrids import bind_vwt_tome
from vwt.preprocess import default_image_processor, preprocess_config
from vwt.tokenize.intra import IntraImageTokenizer
from vwt.tokenize.tokenizer import VisualWordTokenizer

P, SIZE = 8, 32
TINY = {"pretrained": False, "img_size": SIZE, "patch_size": P, "embed_dim": 32, "depth": 2, "num_heads": 4,
        "num_classes": 5}
# name -> (timm architecture, overrides): prefix tokens 0..5, every pooling, layer scale, dynamic size
VARIANTS = {
    "cls-token": ("vit_base_patch16_224", {}),
    "cls-registers-layerscale": ("vit_base_patch16_224", {"reg_tokens": 4, "no_embed_class": True,
                                                          "init_values": 0.1}),
    "registers-avg": ("vit_base_patch16_reg4_gap_256", {}),
    "no-prefix-avg": ("vit_base_patch16_224", {"class_token": False, "global_pool": "avg"}),
    "cls-avgmax": ("vit_base_patch16_224", {"global_pool": "avgmax"}),
    "map": ("vit_base_patch16_siglip_224", {}),
    "deit-distilled": ("deit_base_distilled_patch16_224", {}),
    "dynamic-size": ("vit_base_patch16_224", {"dynamic_img_size": True}),
}
KEYS = ("logits", "pooler_output", "last_hidden_state")


def _model(name):
    torch.manual_seed(0)
    arch, overrides = VARIANTS[name]
    return timm.create_model(arch, **{**TINY, **overrides}).eval()


def _vocab(k=6):
    config = VocabularyConfig(k=k, patch_size=P, num_channels=3, preprocess=preprocess_config(default_image_processor()))
    words = torch.randn(k, 3 * P * P, generator=torch.Generator().manual_seed(1))
    words[0] = 1.0  # the word of flat patches
    return VisualVocabulary(words, config)


def _pixels(batch=3, height=SIZE, width=SIZE):
    pixels = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(2))
    pixels[0] = 0.5  # a flat image: all its patches match word 0
    pixels[1, :, : height // 2] = 0.5  # half flat
    return pixels


def _reference(model, pixels):
    with torch.no_grad():
        features = model.forward_features(pixels)
        return {"logits": model(pixels), "pooler_output": model.forward_head(features, pre_logits=True),
                "last_hidden_state": features}


def _call(model, batch, **kwargs):
    with torch.no_grad():
        return VisualWordModel(model, **kwargs)(batch)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("tokenizer", [None, VisualWordTokenizer(_vocab(), threshold=-1.0), IntraImageTokenizer(1.0, P)],
                         ids=["pixels", "vwt-threshold-minus-one", "intra-keep-all"])
def test_nothing_merged_reproduces_the_unmodified_timm_model(name, tokenizer):
    model, pixels = _model(name), _pixels()
    batch = {"pixel_values": pixels} if tokenizer is None else tokenizer(pixel_values=pixels)
    got, want = _call(model, batch), _reference(model, pixels)
    assert adapter_for(model).num_prefix_tokens == model.num_prefix_tokens
    for key in KEYS:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)


def test_a_dynamic_size_model_runs_other_image_sizes_as_timm_does():
    model = _model("dynamic-size")
    pixels = _pixels(2, height=48, width=40)
    got = _call(model, VisualWordTokenizer(_vocab(), threshold=-1.0)(pixel_values=pixels))
    for key, value in _reference(model, pixels).items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not match the model's 32x32"):
        _call(_model("cls-token"), {"pixel_values": pixels})


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("batching", BATCHING)
def test_in_a_merged_batch_each_timm_image_gets_its_own_result(name, batching):
    model, pixels = _model(name), _pixels()
    tokenizer = VisualWordTokenizer(_vocab(), threshold=0.1)
    batch = tokenizer(pixel_values=pixels)
    assert len(set(batch["num_tokens"].tolist())) > 1 and (batch["token_sizes"] > 1).any()
    together = _call(model, batch, batching=batching)
    prefix = model.num_prefix_tokens
    for i in range(len(pixels)):
        alone = _call(model, tokenizer(pixel_values=pixels[i : i + 1]))
        n = prefix + int(batch["num_tokens"][i])
        assert alone.last_hidden_state.shape[1] == n
        torch.testing.assert_close(together.last_hidden_state[i : i + 1, :n], alone.last_hidden_state, rtol=1e-4,
                                   atol=1e-5)
        for key in ("logits", "pooler_output"):
            torch.testing.assert_close(together[key][i : i + 1], alone[key], rtol=1e-4, atol=1e-5)


def test_a_merged_token_weighs_as_its_patches_in_the_average_pool():
    """Size-aware pooling: a token of s patches counts s times in ``avg``, so splitting it changes nothing."""
    model = _model("no-prefix-avg")
    with torch.no_grad():
        hidden = torch.randn(1, 3, 32)
        sizes = torch.tensor([[3, 1, 0]])
        pooled = adapter_for(model).outputs(hidden, torch.tensor([[1, 1, 0]]), token_sizes=sizes).pooler_output
        copies = hidden[:, [0, 0, 0, 1]]
        expected = adapter_for(model).outputs(copies, torch.ones(1, 4, dtype=torch.long)).pooler_output
    torch.testing.assert_close(pooled, expected)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_tome_on_timm_keeps_the_prefix_first_and_merges_each_image_as_alone(name):
    model, pixels = _model(name), _pixels()
    with torch.no_grad():
        untouched = ToMe(model, r=0)(pixels).outputs
        merged = ToMe(model, r=3, trace_source=True)(pixels)
        alone = [ToMe(model, r=3)(pixels[i : i + 1]).outputs for i in range(len(pixels))]
    torch.testing.assert_close(untouched.logits, _reference(model, pixels)["logits"], rtol=1e-5, atol=1e-5)
    prefix, n = model.num_prefix_tokens, (SIZE // P) ** 2
    assert merged.tokens_per_layer == (prefix + n, prefix + n - 3)
    assert (merged.token_sizes[:, :prefix] == 1).all()  # prefix tokens never merged
    assert torch.equal(merged.source.sum(1), torch.ones(len(pixels), n, dtype=torch.uint8))  # each patch once
    for i, out in enumerate(alone):
        torch.testing.assert_close(merged.outputs.logits[i : i + 1], out.logits, rtol=1e-4, atol=1e-5)


def test_vwt_tome_with_nothing_merged_at_the_input_is_tome_on_timm():
    model, pixels = _model("cls-registers-layerscale"), _pixels()
    with torch.no_grad():
        hybrid = bind_vwt_tome(model, vocab=VisualWordTokenizer(_vocab(), threshold=-1.0), r=3)(pixels)
        tome = ToMe(model, r=3)(pixels)
    torch.testing.assert_close(hybrid.outputs.logits, tome.outputs.logits, rtol=1e-5, atol=1e-5)
    assert hybrid.tokens_per_layer == tome.tokens_per_layer


def test_every_method_binds_a_timm_model_through_the_one_call_shape():
    import vwt.methods

    model, pixels = _model("cls-registers-layerscale"), _pixels()
    with torch.no_grad():
        base = vwt.methods.load("base").bind(model)(pixels)
        intra = vwt.methods.load("intra", keep=1.0).bind(model)(pixels)
        tome = vwt.methods.load("tome", r=3).bind(model)(pixels)
    torch.testing.assert_close(base.outputs.logits, _reference(model, pixels)["logits"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(intra.outputs.logits, base.outputs.logits, rtol=1e-5, atol=1e-5)
    assert base.tokens_per_layer == (21, 21) and tome.tokens_per_layer == (21, 18)


def test_torch_compile_of_a_timm_visual_word_model_gives_the_eager_outputs():
    torch._dynamo.reset()
    model = _model("cls-registers-layerscale")
    batch = VisualWordTokenizer(_vocab(), max_tokens=9)(pixel_values=_pixels())
    with torch.no_grad():
        expected = VisualWordModel(model)(batch)
        compiled = torch.compile(VisualWordModel(model), backend="aot_eager")(**batch)
    for key in KEYS:
        torch.testing.assert_close(compiled[key], expected[key], rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()


def test_onnxruntime_reproduces_a_timm_model_with_registers_on_another_batch(tmp_path):
    pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from vwt.encoders.export import onnx, onnx_inputs

    model = _model("cls-registers-layerscale")
    tokenizer = VisualWordTokenizer(_vocab(), threshold=0.5)
    names = onnx(VisualWordModel(model), tmp_path / "timm.onnx", tokenizer(pixel_values=_pixels(2)))
    batch = tokenizer(pixel_values=_pixels(3)[[2, 1, 0]])
    session = ort.InferenceSession(str(tmp_path / "timm.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip(names, session.run(None, onnx_inputs(batch))))
    with torch.no_grad():
        expected = VisualWordModel(model)(batch)
    rows = sequence_mask(batch["attention_mask"], model.num_prefix_tokens).bool()
    assert set(names) == set(KEYS)
    for key in names:
        want, have = expected[key], torch.from_numpy(got[key])
        if key == "last_hidden_state":
            want, have = want[rows], have[rows]
        torch.testing.assert_close(have, want, rtol=0, atol=1e-4)


def test_importing_vwt_does_not_import_timm():
    import subprocess
    import sys

    code = "import sys, vwt, vwt.encoders, vwt.methods; assert 'timm' not in sys.modules and 'open_clip' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
