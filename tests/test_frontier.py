"""The frontier sweep: a tiny run end to end through the command, and the goal arithmetic by hand."""

import json

import pytest
import torch
from transformers import ViTConfig, ViTModel

from vwt.bench.frontier import frontier_methods
from vwt.bench.verdicts import goal_verdict, interpolate
from vwt.bench.heldout import five_crops, split_photos
from vwt.cli.bench import main


def _row(label, method, tokens, throughput, cosine, retention):
    return {"label": label, "method": method, "tokens_ratio": tokens, "throughput_ratio": throughput,
            "cosine": cosine, "cosine_min": cosine, "retention": retention, "tokens_per_layer": tokens * 257,
            "latency_ratio": 1.0}


TOME = [_row("tome(r=8)", "tome", 0.8, 1.2, 0.99, 1.0), _row("tome(r=16)", "tome", 0.6, 1.6, 0.97, 0.9)]


def test_interpolation_is_linear_between_points_and_none_outside():
    assert interpolate([(0.6, 0.97), (0.8, 0.99)], 0.7) == pytest.approx(0.98)
    assert interpolate([(0.6, 0.97), (0.8, 0.99)], 0.5) is None


def test_the_goal_compares_with_tome_at_equal_tokens_and_at_equal_throughput():
    close = _row("vwt(a)", "vwt", 0.65, 1.5, 0.9725 - 0.002, 0.90)  # ToMe there: cosine 0.975, retention 0.925
    better = _row("vwt+tome(b)", "vwt+tome", 0.62, 1.4, 0.975, 0.96)  # ToMe: 0.972, 0.95
    too_many = _row("vwt(c)", "vwt", 0.7, 1.3, 0.999, 1.0)
    verdict = goal_verdict(TOME + [close, better, too_many])
    by_label = {c["label"]: c for c in verdict["candidates"]}
    assert set(by_label) == {"vwt(a)", "vwt+tome(b)"}  # more than 0.65 of the tokens does not count
    assert by_label["vwt(a)"]["cosine_gap"] == pytest.approx(-0.0045)
    assert not by_label["vwt(a)"]["met"]
    assert by_label["vwt+tome(b)"]["cosine_gap"] == pytest.approx(0.003)
    assert by_label["vwt+tome(b)"]["retention_gap"] == pytest.approx(0.01)
    assert verdict["met"] and verdict["best"] == "vwt+tome(b)"


def test_faster_than_every_tome_configuration_compares_with_tomes_best_retention():
    fast = _row("vwt+tome(f)", "vwt+tome", 0.6, 2.0, 0.98, 0.99)
    [candidate] = goal_verdict(TOME + [fast])["candidates"]
    assert candidate["tome_retention"] == 1.0 and candidate["retention_gap"] == pytest.approx(-0.01)
    slow = _row("vwt(s)", "vwt", 0.6, 1.0, 0.98, 0.99)  # slower than every ToMe point: no comparison
    assert goal_verdict(TOME + [slow])["candidates"][0]["tome_retention"] is None


def test_the_sweep_has_every_family_and_fits_tome_to_the_model():
    methods = frontier_methods("vocab-dir", num_patches=196, num_layers=12)
    names = {m.name for m in methods}
    assert names == {"base", "tome", "vwt", "vwt+tome", "intra", "q8"}
    assert max(m.options["r"] for m in methods if m.name == "tome") == 16  # 12 x 16 < 196 patches
    assert any(m.options.get("connected") for m in methods if m.name == "vwt")


def test_held_out_photos_are_not_in_the_vocabulary_sample(sample_photos):
    vocab, held_out = split_photos(sample_photos)
    assert not {name for name, _ in vocab} & {name for name, _ in held_out}
    assert len(vocab) + len(held_out) == len(sample_photos)
    crops = five_crops(held_out[0][1])
    assert len(crops) == 5 and len({c.size for c in crops}) == 1


def test_the_frontier_command_runs_a_tiny_sweep(tmp_path, capsys):
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       image_size=224, patch_size=16)
    ViTModel(config).eval().save_pretrained(tmp_path / "tiny")
    out = tmp_path / "frontier"
    probe = ["--no-probe"]
    from vwt.bench.fashion_mnist import FASHION_MNIST_DIR

    if FASHION_MNIST_DIR.is_dir():
        probe = ["--probe-train", "40", "--probe-test", "20"]
    status = main(["--frontier", "--model", str(tmp_path / "tiny"), "--out", str(out), "--k", "8", "--crops", "1",
                   "--batch-sizes", "1", "4", "--repeats", "1", "--threads", "1", "--no-progress", *probe,
                   "--methods", "base", "tome:r=20", f"vwt:vocab={out}/vocabulary,threshold=0.3,connected=true",
                   f"vwt+tome:vocab={out}/vocabulary,threshold=0.3,connected=true,r=10"])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    rows = {r["label"]: r for r in results["frontier"]["rows"]}
    assert len(rows) == 4 and rows["base"]["tokens_ratio"] == 1.0 and rows["base"]["cosine"] == pytest.approx(1.0)
    assert rows["tome(r=20)"]["tokens_ratio"] < 1.0
    hybrid = next(r for label, r in rows.items() if label.startswith("vwt+tome"))
    alone = next(r for label, r in rows.items() if label.startswith("vwt("))
    assert hybrid["tokens_per_layer"] < alone["tokens_per_layer"]  # ToMe merges on top of the words
    assert results["images"]["count"] == 9 and "frontier" in results
    assert (out / "frontier.md").read_text().count("\n|") == 6  # header, rule, 4 rows
    assert (out / "frontier.png").stat().st_size > 0
    assert "goal" in capsys.readouterr().out
