"""Deployment: ONNX export, torch.compile, low precision and devices, on tiny random CLIP and ViT models."""

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    ViTConfig,
    ViTForImageClassification,
)

from vwt import VisualVocabulary, VocabularyConfig
from vwt.encoders import VisualWordModel
from vwt.encoders.export import onnx, onnx_inputs
from vwt.preprocess import default_image_processor, preprocess_config
from vwt.tokenize.intra import IntraImageTokenizer
from vwt.tokenize.tokenizer import VisualWordTokenizer

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


def _onnxruntime():
    pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
    return pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnxruntime_reproduces_pytorch_on_another_batch_size_and_token_count(tmp_path, name, attn):
    ort = _onnxruntime()
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
    ort = _onnxruntime()
    model = _model("clip", "sdpa")
    tokenizer = IntraImageTokenizer(max_tokens=9, patch_size=P)
    path = tmp_path / "intra.onnx"
    outputs = onnx(model, path, tokenizer(pixel_values=_pixels(1, seed=4, flat_rows=[0])))  # a batch of 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = IntraImageTokenizer(max_tokens=5, patch_size=P)(pixel_values=_pixels(1, seed=5, flat_rows=[0]))
    with torch.no_grad():
        expected = VisualWordModel(model)(batch)
    got = dict(zip(outputs, session.run(None, onnx_inputs(batch))))
    assert got["last_hidden_state"].shape == (1, 6, 32)
    torch.testing.assert_close(torch.from_numpy(got["pooler_output"]), expected.pooler_output, rtol=0, atol=1e-4)


def test_batching_that_plans_on_the_data_is_refused():
    with pytest.raises(ValueError, match="batching='pad'"):
        onnx(VisualWordModel(_model("clip", "sdpa"), batching="pack"), "unused.onnx", {})


def _counting_backend(graphs):
    """A torch.compile backend that records each graph it is asked to compile and runs it as is."""
    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward
    return backend


def test_a_compiled_visual_word_model_runs_in_one_graph_and_a_token_budget_never_recompiles():
    torch._dynamo.reset()
    model = _model("clip", "sdpa")
    graphs = []
    compiled = torch.compile(VisualWordModel(model), backend=_counting_backend(graphs), fullgraph=True)  # no breaks
    budget = VisualWordTokenizer(_tokenizer(0.5).vocabulary, max_tokens=9)  # every image exactly 9 tokens
    with torch.no_grad():
        for seed in range(3):  # other images, same batch size and token count
            batch = budget(pixel_values=_pixels(2, seed=seed, flat_rows=[seed, 0]))
            assert batch["attention_mask"].shape == (2, 10)
            out = compiled(**batch)
            # The eager backend runs the captured graph op for op: equal up to float reassociation.
            torch.testing.assert_close(out.pooler_output, VisualWordModel(model)(batch).pooler_output)
        assert len(graphs) == 1
        # A new token count recompiles once, with the token axis dynamic; later counts reuse that graph.
        vocabulary = budget.vocabulary
        for max_tokens in (5, 7, 11):
            tokenizer = VisualWordTokenizer(vocabulary, max_tokens=max_tokens)
            compiled(**tokenizer(pixel_values=_pixels(2, seed=9, flat_rows=[0, 0])))
        assert len(graphs) == 2
        # Padding (a mask with zeros) is data, not shape: no recompile.
        batch = _tokenizer(0.5)(pixel_values=_pixels(2, seed=3, flat_rows=[3, 0]))
        assert batch["attention_mask"].min() == 0
        compiled(**batch)
        assert len(graphs) == 2
    torch._dynamo.reset()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_bfloat16_model_on_float32_tokens_matches_float32_at_bfloat16_precision(name):
    tokenizer = _tokenizer(0.5)
    batch = tokenizer(pixel_values=_pixels(3, seed=3, flat_rows=[3, 0, 1]).to(torch.bfloat16))
    assert batch["pixel_values"].dtype == torch.float32  # the tokenizer works in float32 whatever it is given
    model32, model16 = _model(name, "sdpa"), _model(name, "sdpa").to(torch.bfloat16)
    key = "logits" if name == "vit-classifier" else "pooler_output"
    with torch.no_grad():
        out16 = VisualWordModel(model16)(batch)[key]
        out32 = VisualWordModel(model32)(batch)[key]
        # Nothing reduced: the bf16 model through vwt is the bf16 model itself. Same ops; assert_close's
        # bf16 defaults (about one bf16 step) leave room only for another attention kernel being chosen.
        full = IntraImageTokenizer(1.0, P)(pixel_values=batch["pixel_values"])
        torch.testing.assert_close(VisualWordModel(model16)(full)[key], model16(pixel_values=full["pixel_values"])[key])
    assert out16.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa (relative step 2**-8 = 0.004); two layers of rounded matmuls and norms
    # stay within a few steps of the float32 result, measured on values of order 1.
    scale = out32.abs().max()
    torch.testing.assert_close(out16.float(), out32, rtol=0, atol=float(0.05 * scale))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_a_tokenizer_with_a_device_moves_its_words_once_and_returns_its_batch_there(device):
    pixels = _pixels(2, seed=3, flat_rows=[3, 0])
    vocabulary = _tokenizer(0.5).vocabulary
    for tokenizer, placed in [
        (VisualWordTokenizer(vocabulary, threshold=0.5), VisualWordTokenizer(vocabulary, threshold=0.5, device=device)),
        (IntraImageTokenizer(max_tokens=9, patch_size=P), IntraImageTokenizer(max_tokens=9, patch_size=P, device=device)),
    ]:
        if isinstance(placed, VisualWordTokenizer):
            assert placed._unit_words.device.type == device  # moved once, at construction
        batch = placed(pixel_values=pixels)
        for key, value in batch.items():
            assert value.device.type == device, key
        expected = tokenizer(pixel_values=pixels)
        assert set(batch) == set(expected)
        for key in expected:  # same work on another device: equal up to that device's float kernels
            torch.testing.assert_close(batch[key].cpu(), expected[key])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_merging_pixel_patches_before_the_projection_gives_the_tokens_of_merging_embeddings(name):
    from vwt.encoders import adapter_for
    from vwt.encoders.linear import merged_linear_embedding
    from vwt.encoders.merge import merge_tokens

    adapter = adapter_for(_model(name, "sdpa"))
    pixels = _pixels(3, seed=3, flat_rows=[3, 0, 1])
    for batch in (_tokenizer(0.5)(pixel_values=pixels),  # merged groups and padding
                  IntraImageTokenizer(max_tokens=7, patch_size=P)(pixel_values=pixels)):  # dropped patches
        t = batch["attention_mask"].shape[1] - 1
        with torch.no_grad():
            full = adapter.embed(pixels)  # every patch embedded, positions added, CLS first
            expected = torch.cat([full[:, :1], merge_tokens(full[:, 1:], batch["patch_to_token"], t)], dim=1)
            got = merged_linear_embedding(adapter.linear_patch_embedding(pixels), pixels, batch["patch_to_token"], t)
        # The same affine map applied before or after a mean: equal up to float32 reassociation.
        torch.testing.assert_close(got, expected)
        assert torch.equal(got[~batch["attention_mask"].bool()], expected[~batch["attention_mask"].bool()])  # zeros
