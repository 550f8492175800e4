import numpy as np
import pytest
import torch
from PIL import Image

from vwt import VisualVocabulary, build_vocabulary
from vwt.preprocess import default_image_processor, preprocess_images, to_rgb_image


@pytest.fixture(scope="module")
def photos(sample_photos):
    return [image for _, image in sample_photos[:4]]


def test_a_build_on_real_photos_is_reproducible_with_the_same_seed_and_differs_with_another(photos):
    kwargs = dict(k=16, patches_per_image=64, batch_size=128, progress=False)
    a = build_vocabulary(photos, seed=1, **kwargs)
    b = build_vocabulary(photos, seed=1, **kwargs)
    c = build_vocabulary(photos, seed=2, **kwargs)
    assert torch.equal(a.centroids, b.centroids)
    assert not torch.equal(a.centroids, c.centroids)
    assert a.config.num_images == 4 and a.config.num_patches == 4 * 64
    assert a.config.seed == 1 and c.config.seed == 2


def test_words_live_in_the_models_normalized_pixel_space(photos):
    vocab = build_vocabulary(photos, k=8, progress=False)
    pixels = preprocess_images(photos, default_image_processor())
    assert vocab.centroids.shape == (8, 3 * 16 * 16)
    # Centroids are means of patches, so they stay inside the range of the normalized pixels.
    assert vocab.centroids.min() >= pixels.min() - 1e-4 and vocab.centroids.max() <= pixels.max() + 1e-4
    assert vocab.config.preprocess.image_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_a_build_that_raises_midway_leaves_no_output_directory(photos, tmp_path):
    def stream():
        yield from photos[:2]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        build_vocabulary(stream(), k=4, out=tmp_path / "vocab", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_successful_build_writes_a_loadable_directory_and_refuses_to_overwrite(photos, tmp_path):
    out = tmp_path / "vocab"
    built = build_vocabulary(photos[:2], k=4, out=out, progress=False)
    assert torch.equal(VisualVocabulary.from_pretrained(out).centroids, built.centroids)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_vocabulary(photos[:2], k=4, out=out, progress=False)
    rebuilt = build_vocabulary(photos[:2], k=4, seed=5, out=out, overwrite=True, progress=False)
    assert torch.equal(VisualVocabulary.from_pretrained(out).centroids, rebuilt.centroids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab"]


def test_an_empty_stream_is_a_clear_error():
    with pytest.raises(ValueError, match="not enough patches to learn 4 words: 0 patches from 0 images"):
        build_vocabulary([], k=4, progress=False)


def test_max_images_stops_the_stream(photos):
    vocab = build_vocabulary(photos, k=4, max_images=2, progress=False)
    assert vocab.config.num_images == 2


def test_odd_image_modes_are_converted_to_rgb_like_the_processor_would(photos):
    rgb = to_rgb_image(photos[0])
    gray = Image.fromarray(np.asarray(rgb.convert("L")))
    rgba = rgb.convert("RGBA")
    palette = rgb.convert("P")
    deep = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)  # 16-bit grayscale
    tiny = rgb.resize((3, 2))
    for image in (gray, rgba, palette, deep, tiny):
        converted = to_rgb_image(image)
        assert converted.mode == "RGB" and converted.size == image.size
    as_float = to_rgb_image(np.asarray(rgb, dtype=np.float32) / 255)
    np.testing.assert_array_equal(np.asarray(as_float), np.asarray(rgb))
    # A 16-bit array is scaled to 8 bits (a 16-bit PIL image saturates as the processor's: test_preprocess.py).
    deep_array = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
    np.testing.assert_array_equal(np.asarray(to_rgb_image(deep_array)), np.asarray(to_rgb_image(gray)))
    vocab = build_vocabulary([gray, rgba, palette, deep, tiny], k=4, progress=False)
    assert vocab.config.num_images == 5 and vocab.config.num_skipped == 0


def test_bad_arguments_are_clear_errors(photos):
    with pytest.raises(ValueError, match="positive"):
        build_vocabulary(photos, k=0, progress=False)
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        build_vocabulary(photos, k=4, patch_size=15, progress=False)


def test_patches_are_taken_after_the_processors_normalization():
    black = np.zeros((64, 64, 3), dtype=np.uint8)
    vocab = build_vocabulary([black], k=1, progress=False)
    mean = torch.tensor(vocab.config.preprocess.image_mean)
    std = torch.tensor(vocab.config.preprocess.image_std)
    expected = (-mean / std).repeat_interleave(16 * 16)  # channel-major: all of channel 0, then 1, then 2
    torch.testing.assert_close(vocab.centroids[0], expected)
