"""The benchmark harness on tiny models: every method reported, ratios paired within one run, FLOPs that
match a hand count, honest energy, a linear probe and CLIP zero-shot that work, and the CLI end to end.
No test asserts a time."""

import csv
import importlib.util
import json
import logging
import statistics

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTokenizer,
    ViTConfig,
    ViTModel,
)

from vwt import IntraImageTokenizer, VisualWordModel, methods
from vwt.bench import (
    count_flops,
    make_batches,
    open_energy_meter,
    parse_method_spec,
    parse_method_specs,
    run_benchmark,
)
from vwt.bench.accuracy import linear_probe, load_labeled_folder, zero_shot_accuracy
from vwt.bench.energy import POWERCAP_ROOT, RaplMeter, UnavailableMeter
from vwt.bench.fashion_mnist import FASHION_MNIST_DIR
from vwt.bench.memory import TensorMemoryTracker
from vwt.bench.plots import write_plots
from vwt.bench.report import CSV_FIELDS, write_csv, write_json
from vwt.cli.bench import main
from vwt.preprocess import preprocess_images

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
fashion_mnist = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                                   reason=f"Fashion-MNIST not installed at {FASHION_MNIST_DIR} "
                                          "(apt-get install dataset-fashion-mnist)")

BATCH_FIELDS = {"batch_size", "images_per_round", "seconds_per_image", "latency_ms", "images_per_s",
                "speedup_vs_base", "time_ratio_vs_base", "flops_per_image", "flops_ratio_vs_base",
                "energy_j_per_image", "energy_ratio_vs_base", "peak_memory_mb", "memory_ratio_vs_base",
                "peak_rss_mb", "tokens_per_layer_mean", "round_seconds"}
TOKEN_FIELDS = {"per_image_mean", "per_image_median", "per_image_min", "per_image_max", "per_layer_mean",
                "ratio_vs_base", "per_layer_ratio_vs_base", "per_image"}


def _vit(layers=2, hidden=32, image=64, patch=16):
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=4, image_size=image, patch_size=patch)
    return ViTModel(config).eval()


def _processor(size):
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


@pytest.fixture(scope="module")
def photos64(sample_photos):
    """Six real photos as 64 px CLIP-normalized pixel values."""
    return preprocess_images([image for _, image in sample_photos[:6]], _processor(64))


@pytest.fixture(scope="module")
def tiny_results(photos64, sample_vocab_dir):
    """One benchmark run of every method family on a tiny ViT (patch 16, 64 px), no energy counter."""
    specs = ["base", f"vwt:vocab={sample_vocab_dir},threshold=0.4",
             f"vwt:vocab={sample_vocab_dir},threshold=0.4,batching=pack", "intra:keep=0.5", "tome:r=2", "q8",
             "dynamicvit:keep=0.5"]
    return run_benchmark(_vit(layers=4), parse_method_specs(specs), photos64, batch_sizes=(1, 4), repeats=2,
                         energy=UnavailableMeter("no counter in this test"), progress=False)


# ------------------------------------------------------------------------------------------- specs
def test_method_specs_parse_into_methods_with_typed_options():
    method = parse_method_spec("vwt:threshold=0.1,vocab=vocabularies/clip-p16-k1000,batching=pack")
    assert method == methods.load("vwt", threshold=0.1, vocab="vocabularies/clip-p16-k1000", batching="pack")
    assert parse_method_spec("intra:max_tokens=64").options == {"max_tokens": 64}
    assert parse_method_spec("intra:keep=0.5").options == {"keep": 0.5}
    assert [m.label for m in parse_method_specs("base tome:r=8 tome:r=13 q8")] == ["base", "tome(r=8)",
                                                                                  "tome(r=13)", "q8"]
    with pytest.raises(ValueError, match="unknown method 'fast'"):
        parse_method_spec("fast:r=3")
    with pytest.raises(ValueError, match="is not key=value"):
        parse_method_spec("tome:13")


def test_batches_cover_every_image_and_cycle_to_fill_the_last():
    batches = make_batches(5, 4)
    assert [b.tolist() for b in batches] == [[0, 1, 2, 3], [4, 0, 1, 2]]
    assert [b.tolist() for b in make_batches(3, 1)] == [[0], [1], [2]]


# --------------------------------------------------------------------------------- results content
def test_results_hold_every_method_with_the_documented_fields(tiny_results, tmp_path):
    labels = [m["label"] for m in tiny_results["methods"]]
    assert labels == ["base", "vwt(vocab=k32, threshold=0.4)", "vwt(vocab=k32, threshold=0.4, batching=pack)",
                      "intra(keep=0.5)", "tome(r=2)", "q8", "dynamicvit(keep=0.5)"]
    for entry in tiny_results["methods"]:
        assert entry["status"] == "ok"
        assert set(entry["batches"]) == {"1", "4"}
        for batch in entry["batches"].values():
            assert set(batch) == BATCH_FIELDS
            assert batch["images_per_s"] > 0 and batch["flops_per_image"] > 0 and batch["peak_memory_mb"] >= 0
        assert set(entry["tokens"]) == TOKEN_FIELDS
        assert len(entry["tokens"]["per_image"]) == 6
        assert -1.0 <= entry["fidelity"]["cosine_min"] <= entry["fidelity"]["cosine_mean"] <= 1.0 + 1e-9

    write_json(tiny_results, tmp_path / "results.json")
    write_csv(tiny_results, tmp_path / "results.csv")
    assert json.loads((tmp_path / "results.json").read_text())["methods"][0]["label"] == "base"
    with (tmp_path / "results.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_FIELDS
    assert {(r["label"], r["batch_size"]) for r in rows} == {(label, b) for label in labels for b in ("1", "4")}


def test_ratios_are_against_base_from_the_same_rounds(tiny_results):
    entries = {m["label"]: m for m in tiny_results["methods"]}
    base = entries["base"]
    for entry in entries.values():
        for size, batch in entry["batches"].items():
            base_rounds = base["batches"][size]["round_seconds"]
            assert len(batch["round_seconds"]) == len(base_rounds) == tiny_results["settings"]["repeats"]
            paired = statistics.median(b / m for b, m in zip(base_rounds, batch["round_seconds"]))
            assert batch["speedup_vs_base"] == pytest.approx(paired)
            assert batch["flops_ratio_vs_base"] == pytest.approx(
                batch["flops_per_image"] / base["batches"][size]["flops_per_image"])
        assert entry["tokens"]["ratio_vs_base"] == pytest.approx(
            entry["tokens"]["per_image_mean"] / base["tokens"]["per_image_mean"])
    assert base["batches"]["1"]["speedup_vs_base"] == 1.0
    assert entries["intra(keep=0.5)"]["tokens"]["ratio_vs_base"] == pytest.approx(9 / 17)
    assert entries["tome(r=2)"]["tokens"]["per_layer_mean"] == pytest.approx((17 + 15 + 13 + 11) / 4)


def test_packing_and_padding_give_the_same_tokens_and_outputs(tiny_results):
    entries = {m["label"]: m for m in tiny_results["methods"]}
    pad, pack = entries["vwt(vocab=k32, threshold=0.4)"], entries["vwt(vocab=k32, threshold=0.4, batching=pack)"]
    assert pad["tokens"]["per_image"] == pack["tokens"]["per_image"]
    assert pad["fidelity"]["cosine_mean"] == pytest.approx(pack["fidelity"]["cosine_mean"], abs=1e-5)


# ------------------------------------------------------------------------------------------- FLOPs
def _hand_count(num_images, tokens, hidden, mlp, layers, patches, patch_dim):
    per_layer = 2 * tokens * hidden * hidden * 4 + 2 * 2 * tokens * hidden * mlp + 2 * 2 * tokens * tokens * hidden
    embed = 2 * patches * patch_dim * hidden
    pooler = 2 * hidden * hidden
    return num_images * (embed + layers * per_layer + pooler)


def test_flops_of_base_on_a_tiny_vit_equal_a_hand_count():
    model, pixels = _vit(layers=3), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, flops = count_flops(lambda: methods.load("base").bind(model)(pixels))
        _, flops_intra = count_flops(lambda: methods.load("intra", keep=0.5).bind(model)(pixels))
    expected = _hand_count(2, tokens=17, hidden=32, mlp=64, layers=3, patches=16, patch_dim=3 * 16 * 16)
    assert flops == pytest.approx(expected, rel=0.01)  # attention included: the CPU SDPA kernel is counted
    assert flops_intra < flops


def test_q8_reports_the_float_models_flops_with_a_note(tiny_results):
    entries = {m["label"]: m for m in tiny_results["methods"]}
    assert entries["q8"]["batches"]["1"]["flops_per_image"] == entries["base"]["batches"]["1"]["flops_per_image"]
    assert "FlopCounterMode" in entries["q8"]["flops_note"]


# ------------------------------------------------------------------------------------ energy, memory
def test_energy_is_null_with_a_reason_when_no_counter_is_readable(tiny_results, tmp_path):
    meter = open_energy_meter("cpu", powercap_root=tmp_path / "no-powercap")
    assert not meter.available and "no RAPL powercap zones" in meter.reason
    assert tiny_results["energy"] == {"available": False, "source": None, "scope": None,
                                      "reason": "no counter in this test"}
    for entry in tiny_results["methods"]:
        assert all(b["energy_j_per_image"] is None and b["energy_ratio_vs_base"] is None
                   for b in entry["batches"].values())


def test_this_machines_rapl_counter_is_used_only_where_readable():
    meter = open_energy_meter("cpu")
    packages = [p for p in POWERCAP_ROOT.glob("intel-rapl:*") if p.name.count(":") == 1 and not _is_psys(p)]
    readable = any(_readable(p / "energy_uj") and _readable(p / "max_energy_range_uj") for p in packages)
    assert meter.available == readable
    if readable:
        assert meter.source == "rapl" and meter.delta(meter.read(), meter.read()) >= 0
    else:
        assert meter.reason and meter.read() is None


def _is_psys(zone):
    try:
        return (zone / "name").read_text().strip() == "psys"
    except OSError:
        return False


def _readable(path):
    try:
        int(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def test_rapl_meter_sums_package_zones_and_handles_wraparound(tmp_path):
    for name, zone, energy in (("package-0", "intel-rapl:0", 990), ("psys", "intel-rapl:1", 5),
                               ("core", "intel-rapl:0:0", 7)):
        (tmp_path / zone).mkdir()
        (tmp_path / zone / "name").write_text(name)
        (tmp_path / zone / "energy_uj").write_text(str(energy))
        (tmp_path / zone / "max_energy_range_uj").write_text("1000")
    meter = RaplMeter.open(tmp_path)
    assert meter.available and [p.parent.name for p, _ in meter.zones] == ["intel-rapl:0"]  # no psys, no sub-zone
    before = meter.read()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("40")  # wrapped past 1000
    assert meter.delta(before, meter.read()) == pytest.approx(50e-6)


def test_tensor_memory_counts_new_allocations_not_views_of_existing_tensors():
    weight = torch.zeros(1000)
    with TensorMemoryTracker() as tracker:
        view = weight.view(10, 100).t()
        assert view.shape == (100, 10)
    assert tracker.peak == 0
    with TensorMemoryTracker() as tracker:
        a = torch.ones(1000) * 2  # two 4000-byte tensors alive at once
        b = a + 1
        del a, b
        c = torch.ones(10)
    assert tracker.peak == 8000 and tracker.live == c.numel() * 4


# ---------------------------------------------------------------------------------------- accuracy
@fashion_mnist
def test_linear_probe_on_tiny_model_features_is_above_chance():
    model = _vit(layers=2, image=32, patch=8)
    runners = {"base": methods.load("base").bind(model), "intra(keep=0.5)": methods.load("intra", keep=0.5).bind(model),
               "intra(keep=0.5)#pack": methods.load("intra", keep=0.5, batching="pack").bind(model)}
    result = linear_probe(runners, image_size=(32, 32), image_mean=(0.5,) * 3, image_std=(0.5,) * 3,
                          train_size=300, test_size=200, same_outputs={"intra(keep=0.5)#pack": "intra(keep=0.5)"},
                          progress=False)
    base = result["per_method"]["base"]
    assert result["train_size"] == 300 and result["test_size"] == 200
    assert base["accuracy"] > 0.25 > result["chance"]  # random-weight features, still well above 10 classes' chance
    assert base["retention_vs_base"] == 1.0
    intra = result["per_method"]["intra(keep=0.5)"]
    assert intra["tokens_per_image_mean"] == 9.0 and base["tokens_per_image_mean"] == 17.0  # CLS + 8 of 16 patches
    assert intra["retention_vs_base"] == pytest.approx(intra["accuracy"] / base["accuracy"])
    assert result["per_method"]["intra(keep=0.5)#pack"]["same_outputs_as"] == "intra(keep=0.5)"


def _tiny_clip():
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 40, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16)
    torch.manual_seed(0)
    return CLIPModel(config).eval(), tokenizer


def _labeled_folder(root, sample_photos):
    for index, (name, image) in enumerate(sample_photos[:6]):
        folder = root / ("cat", "rocket", "coffee")[index % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image)).convert("RGB").resize((48, 40)).save(folder / f"{index}.png")
    return root


def test_zero_shot_base_accuracy_equals_clipmodel_forward(tmp_path, sample_photos):
    model, tokenizer = _tiny_clip()
    pixels, labels, classnames = load_labeled_folder(_labeled_folder(tmp_path / "images", sample_photos),
                                                     _processor(32))
    assert classnames == ["cat", "coffee", "rocket"] and pixels.shape == (6, 3, 32, 32)
    runners = {spec: parse_method_spec(spec).bind(model) for spec in ("base", "intra:keep=0.5", "tome:r=2")}
    result = zero_shot_accuracy(model, runners, tokenizer, pixels, labels, classnames, progress=False)

    text = tokenizer([f"a photo of a {name}" for name in classnames], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                       pixel_values=pixels).logits_per_image
    direct = float((logits.argmax(-1) == labels).float().mean())
    assert set(result["per_method"]) == set(runners)
    assert result["per_method"]["base"]["accuracy"] == pytest.approx(direct)
    batch = IntraImageTokenizer(keep=0.5, patch_size=8)(pixel_values=pixels)  # the same method by hand
    with torch.no_grad():
        intra_logits = VisualWordModel(model)(batch, input_ids=text["input_ids"],
                                              text_attention_mask=text["attention_mask"]).logits_per_image
    intra_direct = float((intra_logits.argmax(-1) == labels).float().mean())
    assert result["per_method"]["intra:keep=0.5"]["accuracy"] == pytest.approx(intra_direct)
    assert result["chance"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------------------------- CLI
def test_cli_quick_run_writes_json_csv_and_pngs(tmp_path, sample_photos, capsys):
    model, tokenizer = _tiny_clip()
    model_dir = tmp_path / "tiny-clip"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    _processor(32).save_pretrained(model_dir)
    out = tmp_path / "out"
    code = main(["--model", str(model_dir), "--quick", "--out", str(out), "--no-progress",
                 "--zero-shot", str(_labeled_folder(tmp_path / "labeled", sample_photos))])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    labels = [m["label"] for m in results["methods"]]
    assert labels[0] == "base" and {"intra(keep=0.5)", "q8"} <= set(labels)
    assert any(label.startswith("vwt(") and "batching=pack" in label for label in labels)
    assert any(label.startswith("tome(") for label in labels)
    assert results["settings"]["batch_sizes"] == [1, 4] and results["model"]["class"] == "CLIPModel"
    assert (out / "vocabularies").is_dir()  # built on the fly: no shipped vocabulary fits patch 8
    assert set(results["accuracy"]["zero_shot"]["classes"]) == {"cat", "coffee", "rocket"}
    if FASHION_MNIST_DIR.is_dir():
        assert results["accuracy"]["linear_probe"]["train_size"] == 200
    with (out / "results.csv").open() as f:
        assert {row["label"] for row in csv.DictReader(f)} == set(labels)
    pngs = {p.name for p in out.glob("*.png")}
    if HAS_MATPLOTLIB:
        assert {"tokens_vs_latency.png", "fidelity_vs_latency.png", "speedup.png", "zero_shot_vs_latency.png"} <= pngs
    else:
        assert not pngs
    assert "| base |" in capsys.readouterr().out


def test_plots_are_skipped_with_a_warning_without_matplotlib(tiny_results, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # import matplotlib -> ImportError
    with caplog.at_level(logging.WARNING, logger="vwt.bench.plots"):
        assert write_plots(tiny_results, tmp_path) == []
    assert "matplotlib is not installed" in caplog.text and not list(tmp_path.glob("*.png"))


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing"), "--quick", "--out", str(tmp_path / "o"), "--no-probe"]) == 2
    assert capsys.readouterr().err.startswith("vwt-bench: error:")
