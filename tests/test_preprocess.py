"""Images become pixel values exactly as the model's own Hugging Face image processor makes them."""

import numpy as np
import pytest
import torch
from PIL import Image

from vwt.preprocess import (
    composites_transparency,
    default_image_processor,
    preprocess_images,
    to_rgb_image,
)


@pytest.fixture(scope="module")
def photo(sample_photos):
    return Image.fromarray(dict(sample_photos)["skimage/chelsea"])


def _with_alpha(photo):
    rgb = np.asarray(photo)
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))  # transparent to opaque
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def _palette_with_transparency(photo):
    palette = photo.convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])  # the top-left colour is see-through
    return palette


MODES = {
    "RGBA": _with_alpha,
    "LA": lambda photo: _with_alpha(photo).convert("LA"),
    "P-with-transparency": _palette_with_transparency,
    "I;16": lambda photo: Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257),
    "CMYK": lambda photo: photo.convert("CMYK"),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_an_image_of_each_mode_is_preprocessed_exactly_as_the_models_own_processor_does(photo, mode):
    image = MODES[mode](photo)
    processor = default_image_processor()
    theirs = processor(images=[image], return_tensors="pt")["pixel_values"]
    ours = preprocess_images([image], processor)
    assert torch.equal(ours, theirs)  # the same conversion and the same processor: identical, not close


def test_a_transparent_rgba_image_is_composited_on_white_not_its_hidden_rgb(photo):
    if not composites_transparency():  # the floor, transformers 5.18, keeps the hidden RGB: so do we (tested above)
        pytest.skip("this transformers' processors convert RGBA with Pillow, without compositing")
    rgba = _with_alpha(photo)
    rgba.putalpha(0)  # fully transparent: the processor sees white
    assert np.asarray(to_rgb_image(rgba)).min() == 255


def test_a_16_bit_png_saturates_like_the_processor_instead_of_being_scaled(photo, tmp_path):
    deep = Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16))
    deep.save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")
        assert np.asarray(to_rgb_image(image)).min() == 255  # 1000 > 255: saturated, as the processor does
