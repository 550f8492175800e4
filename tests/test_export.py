"""ONNX export of the model side: onnxruntime reproduces PyTorch on other batch sizes and token counts."""

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, ViTConfig, ViTForImageClassification

from vwt import VisualVocabulary, VocabularyConfig
from vwt.encoders import VisualWordModel
from vwt.export import onnx, onnx_inputs
from vwt.preprocess import default_image_processor, preprocess_config
from vwt.tokenizer import IntraImageTokenizer, VisualWordTokenizer

pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
ort = pytest.importorskip("onnxruntime")

P, SIZE = 8, 32
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=SIZE,
              patch_size=P)
MODELS = {
    "clip": lambda attn: CLIPVisionModel(CLIPVisionConfig(**VISION, attn_implementation=attn)),
    "vit-classifier": lambda attn: ViTForImageClassification(ViTConfig(**VISION, num_labels=5,
                                                                       attn_implementation=attn)),
}


def _model(name, attn):
    torch.manual_seed(0)
    return MODELS[name](attn).eval()


def _tokenizer(threshold):
    config = VocabularyConfig(k=6, patch_size=P, num_channels=3, preprocess=preprocess_config(default_image_processor()))
    words = torch.randn(6, 3 * P * P, generator=torch.Generator().manual_seed(1))
    words[0] = 1.0  # the word of flat patches
    return VisualWordTokenizer(VisualVocabulary(words, config), threshold=threshold)


def _pixels(batch, seed, flat_rows):
    """Random images whose first ``flat_rows[i]`` patch rows are flat (they merge into one token)."""
    pixels = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    for image, rows in enumerate(flat_rows):
        pixels[image, :, : rows * P] = 0.5
    return pixels


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnxruntime_reproduces_pytorch_on_another_batch_size_and_token_count(tmp_path, name, attn):
    model = _model(name, attn)
    tokenizer = _tokenizer(threshold=0.5)
    example = tokenizer(pixel_values=_pixels(2, seed=2, flat_rows=[1, 2]))
    path = tmp_path / "model.onnx"
    outputs = onnx(VisualWordModel(model), path, example)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # Another batch size, another (padded) token length, and images of different lengths in one batch.
    batch = tokenizer(pixel_values=_pixels(3, seed=3, flat_rows=[3, 0, 1]))
    assert batch["attention_mask"].shape[1] != example["attention_mask"].shape[1]
    assert len(set(batch["num_tokens"].tolist())) > 1
    with torch.no_grad():
        expected = VisualWordModel(model)(batch)
    got = dict(zip(outputs, session.run(None, onnx_inputs(batch))))
    assert set(outputs) >= ({"logits"} if name == "vit-classifier" else {"last_hidden_state", "pooler_output"})
    mask = batch["attention_mask"].bool()
    for key in outputs:
        want, have = expected[key], torch.from_numpy(got[key])
        if key == "last_hidden_state":  # padded rows are undefined: compare the real tokens
            want, have = want[mask], have[mask]
        # The bound: float32 kernels of two runtimes differ in summation order only.
        torch.testing.assert_close(have, want, rtol=0, atol=1e-4)


def test_the_export_runs_a_batch_of_one_and_an_intra_image_batch(tmp_path):
    model = _model("clip", "sdpa")
    tokenizer = IntraImageTokenizer(keep=9, patch_size=P)
    path = tmp_path / "intra.onnx"
    outputs = onnx(model, path, tokenizer(pixel_values=_pixels(1, seed=4, flat_rows=[0])))  # a batch of 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = IntraImageTokenizer(keep=5, patch_size=P)(pixel_values=_pixels(1, seed=5, flat_rows=[0]))
    with torch.no_grad():
        expected = VisualWordModel(model)(batch)
    got = dict(zip(outputs, session.run(None, onnx_inputs(batch))))
    assert got["last_hidden_state"].shape == (1, 6, 32)
    torch.testing.assert_close(torch.from_numpy(got["pooler_output"]), expected.pooler_output, rtol=0, atol=1e-4)


def test_batching_that_plans_on_the_data_is_refused():
    with pytest.raises(ValueError, match="batching='pad'"):
        onnx(VisualWordModel(_model("clip", "sdpa"), batching="pack"), "unused.onnx", {})
