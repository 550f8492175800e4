"""What the adversarial pass over the public entry points found, each now a clear error (docs/reliability.md)."""

import pytest
import torch
from transformers import ViTConfig, ViTModel

from vwt import build_vocabulary, methods
from vwt.cli.bench import main as bench_main
from vwt.cli.viz import main as viz_main
from vwt.io import BadFileError
from vwt.methods.dynamicvit import DynamicViT, DynamicViTConfig
from vwt.preprocess import default_image_processor, load_image_processor
from vwt.tokenize.intra import IntraImageTokenizer


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       image_size=32, patch_size=8)
    return ViTModel(config).eval()


@pytest.mark.parametrize("k", [True, "4", 4.0])
def test_build_vocabulary_refuses_a_k_that_is_not_an_int_by_name(k):
    with pytest.raises(TypeError, match="k must be an int, got"):
        build_vocabulary([], k=k, progress=False)


@pytest.mark.parametrize("name", ["base", "tome", "intra"])
def test_every_method_runner_refuses_integer_pixel_values_as_the_model_does(vit, name):
    options = {"tome": {"r": 2}, "intra": {"keep": 0.5}}.get(name, {})
    runner = methods.load(name, **options).bind(vit)
    with pytest.raises(TypeError, match="pixel_values must be floating point.*torch.int64"):
        runner(torch.zeros(1, 3, 32, 32, dtype=torch.long))


def test_a_dynamicvit_predictor_whose_config_json_is_dev_zero_is_refused_without_reading_it(vit, tmp_path):
    DynamicViT(vit, DynamicViTConfig()).save_pretrained(tmp_path / "dv")
    (tmp_path / "dv" / "config.json").unlink()
    (tmp_path / "dv" / "config.json").symlink_to("/dev/zero")
    with pytest.raises(BadFileError, match=r"dv/config\.json: is a character device"):
        methods.load("dynamicvit", predictor=str(tmp_path / "dv")).bind(vit)


def test_pixel_values_that_are_not_numbers_are_a_type_error():
    with pytest.raises(TypeError, match="pixel_values must be a tensor or an array of numbers"):
        IntraImageTokenizer(0.5, 8)(pixel_values=[["a"]])


def test_an_image_processor_directory_whose_config_is_dev_zero_is_refused_before_transformers_reads_it(tmp_path):
    default_image_processor().save_pretrained(tmp_path / "proc")
    (tmp_path / "proc" / "preprocessor_config.json").unlink()
    (tmp_path / "proc" / "preprocessor_config.json").symlink_to("/dev/zero")
    with pytest.raises(BadFileError, match=r"preprocessor_config\.json: is a character device"):
        load_image_processor(tmp_path / "proc")


def test_viz_refuses_a_scale_beyond_16_instead_of_allocating_petabytes(capsys):
    assert viz_main(["--method", "intra", "--scale", "100000"]) == 2
    assert "--scale must be in 1..16" in capsys.readouterr().err


def test_a_mistyped_local_model_directory_for_viz_and_bench_is_no_such_directory(tmp_path, capsys):
    assert viz_main(["--method", "tome", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "x.png")]) == 1
    assert "no such directory" in capsys.readouterr().err
    assert bench_main(["--model", "./nope", "--quick", "--no-probe", "--no-plots", "--out", str(tmp_path / "b")]) == 2
    assert "no such directory: ./nope" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_bench_with_a_mistyped_method_fails_before_loading_anything_and_writes_no_directory(tmp_path, capsys):
    assert bench_main(["--methods", "garbage", "--quick", "--no-probe", "--out", str(tmp_path / "b")]) == 2
    assert "unknown method 'garbage'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
