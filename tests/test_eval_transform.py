"""timm's and open_clip's preprocessing as a vocabulary records it and a tokenizer re-runs it.

The comparisons with the libraries' own transforms need timm / open_clip (skipped where they do not
import); the recipe itself (rounding, round trip, errors) is tested everywhere."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vwt.eval_transform import EvalTransform, eval_transform
from vwt.preprocess import image_processor_from_config, preprocess_config, preprocess_images, to_rgb_image


def _library(name):
    try:
        return pytest.importorskip(name)
    except RuntimeError as error:  # torchvision next to a torch build it was not made for
        pytest.skip(f"{name} does not import here: {error}")


def _library_transform(name):
    """The library's own eval transform for ``timm:<model>`` / ``open_clip:<model>``."""
    library, model = name.split(":")
    if library == "timm":
        timm = _library("timm")
        from timm.data import create_transform, resolve_model_data_config

        return create_transform(**resolve_model_data_config(timm.create_model(model, pretrained=False,
                                                                                   device="meta")))
    return _library("open_clip").create_model_and_transforms(model, pretrained=None, device="meta")[2]


NAMES = ["timm:vit_base_patch16_224", "timm:deit_base_distilled_patch16_224", "timm:vit_base_patch16_clip_224",
         "open_clip:ViT-B-16"]


@pytest.mark.parametrize("name", NAMES)
def test_the_recorded_recipe_preprocesses_real_photos_exactly_as_the_library(name, sample_photos):
    transform = _library_transform(name)
    photos = [to_rgb_image(image) for _, image in sample_photos]
    recorded = image_processor_from_config(preprocess_config(eval_transform(name)))  # through the saved JSON
    want = torch.stack([transform(photo) for photo in photos])
    assert torch.equal(preprocess_images(photos, recorded), want)  # bit for bit, on all 18 photos


def test_a_vocabulary_built_for_a_timm_model_tokenizes_photos_in_that_models_pixels(tmp_path, sample_photos):
    name = "timm:vit_base_patch16_224"
    transform = _library_transform(name)
    out = tmp_path / "vocab"
    command = [sys.executable, "-m", "vwt.cli.build_vocab", "--data", "sample", "--k", "8", "--max-images", "2",
               "--patches-per-image", "32", "--image-processor", name, "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True)
    from vwt import VisualVocabulary, VisualWordTokenizer

    preprocess = VisualVocabulary.from_pretrained(out).config.preprocess
    assert (preprocess.processor_type, preprocess.processor["source"]) == ("EvalTransform", name)
    assert preprocess.image_mean == (0.5, 0.5, 0.5) and preprocess.image_size == (224, 224)
    photos = [to_rgb_image(image) for _, image in sample_photos[2:5]]
    batch = VisualWordTokenizer.from_pretrained(out, threshold=0.5)(photos)
    assert torch.equal(batch["pixel_values"], torch.stack([transform(photo) for photo in photos]))


def test_the_center_crop_rounds_its_offset_to_nearest_as_torchvision():
    """371 - 224 = 147 columns to cut: torchvision keeps columns 74.. (round 73.5 up), a HF processor 73.."""
    array = np.random.default_rng(0).integers(0, 256, (248, 371, 3), dtype=np.uint8)
    recipe = EvalTransform({"shortest_edge": 248}, {"height": 224, "width": 224}, "bicubic", [0, 0, 0], [1, 1, 1])
    got = recipe(images=[Image.fromarray(array)])["pixel_values"][0]
    want = torch.from_numpy(array[12:236, 74:298]).permute(2, 0, 1).float() / 255
    assert torch.equal(got, want)


def test_the_shortest_side_resize_truncates_the_long_side_and_the_recipe_round_trips():
    recipe = EvalTransform({"shortest_edge": 10}, None, "bilinear", [0.5] * 3, [0.25] * 3, "timm:x")
    image = Image.fromarray(np.full((30, 47, 3), 128, dtype=np.uint8))
    assert recipe(images=[image])["pixel_values"].shape == (1, 3, 10, 15)  # 47 * 10 / 30 = 15.67 -> 15
    assert EvalTransform.from_dict(recipe.to_dict()).to_dict() == recipe.to_dict()


def test_names_without_a_library_and_unknown_interpolations_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="timm:<model> or open_clip:<model>"):
        eval_transform("vit_base_patch16_224")
    with pytest.raises(ValueError, match="unsupported interpolation"):
        EvalTransform({"shortest_edge": 8}, None, "cubic-ish", [0], [1])
    monkeypatch.setitem(sys.modules, "open_clip", None)  # as where open_clip is not installed
    with pytest.raises(ImportError, match=r"open_clip:ViT-B-16 needs open_clip \(pip install 'vwt\[open_clip\]'"):
        eval_transform("open_clip:ViT-B-16")
