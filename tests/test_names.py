"""One meaning per name: old spellings still work where the meaning is unchanged, with a DeprecationWarning."""

import json

import pytest
import torch

from vwt import methods
from vwt.methods import attend_proportionally
from vwt.methods.dynamicvit import DynamicViTConfig
from vwt.methods.result import MethodResult
from vwt.tokenize import matching


def test_the_function_that_counts_token_sizes_has_a_verb_and_the_old_name_warns():
    with pytest.warns(DeprecationWarning, match="count_token_sizes"):
        old = matching.token_sizes
    assert old is matching.count_token_sizes


@pytest.mark.parametrize("module", ["vwt.methods", "vwt.methods.tome"])
def test_the_attention_function_is_attend_proportionally_and_the_old_name_warns(module):
    import importlib

    with pytest.warns(DeprecationWarning, match="attend_proportionally"):
        old = importlib.import_module(module).proportional_attention
    assert old is attend_proportionally


def test_dynamicvit_keep_ratio_is_keep_with_a_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match="keep="):
        old = DynamicViTConfig(keep_ratio=0.5)
    assert old == DynamicViTConfig(keep=0.5) and "keep_ratio" not in old.to_dict()
    with pytest.warns(DeprecationWarning, match="keep_ratio is the old name"):
        saved = DynamicViTConfig.from_dict({"keep_ratio": 0.6, "prune_layers": [1, 2]})
    assert saved.keep == 0.6 and saved.prune_layers == (1, 2)
    with pytest.warns(DeprecationWarning, match="keep="):
        method = methods.load("dynamicvit", keep_ratio=0.5)
        bound = method.bind(_tiny_vit())
    assert bound.run.config.keep == 0.5
    with pytest.raises(TypeError, match="keep= only"):
        methods.load("dynamicvit", keep=0.5, keep_ratio=0.5).bind(_tiny_vit())


def test_method_result_sequence_lengths_and_the_old_tokens_per_image():
    result = MethodResult(outputs=None, tokens_per_layer=(5.0,), sequence_lengths=torch.tensor([5, 3]))
    with pytest.warns(DeprecationWarning, match="sequence_lengths"):
        assert result.tokens_per_image is result.sequence_lengths


def _tiny_vit():
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    return ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                              image_size=32, patch_size=8), add_pooling_layer=False).eval()


def test_an_old_predictor_config_json_loads(tmp_path):
    from vwt.methods.dynamicvit import DynamicViT

    model = _tiny_vit()
    DynamicViT(model, DynamicViTConfig(keep=0.6)).save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    config["keep_ratio"] = config.pop("keep")
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    with pytest.warns(DeprecationWarning, match="keep_ratio"):
        assert DynamicViT.from_pretrained(tmp_path / "p", model).config.keep == 0.6


def test_intra_keep_is_a_fraction_and_an_old_count_becomes_max_tokens_with_a_warning():
    from vwt import IntraImageTokenizer

    pixels = torch.randn(2, 3, 32, 32)  # 16 patches of 8
    with pytest.warns(DeprecationWarning, match="max_tokens=5"):
        old = IntraImageTokenizer(keep=5, patch_size=8)
    assert old.max_tokens == 5 and old.keep is None
    new = IntraImageTokenizer(max_tokens=5, patch_size=8)
    assert torch.equal(old(pixel_values=pixels)["patch_to_token"], new(pixel_values=pixels)["patch_to_token"])
    assert new(pixel_values=pixels)["num_tokens"].tolist() == [5, 5]
    with pytest.warns(FutureWarning, match="keeps every patch"):
        every = IntraImageTokenizer(keep=1, patch_size=8)
    assert every(pixel_values=pixels)["num_tokens"].tolist() == [16, 16]
    for bad in (1.5, 12.0, 0.0):
        with pytest.raises(ValueError, match="fraction"):
            IntraImageTokenizer(keep=bad, patch_size=8)
    with pytest.raises(ValueError, match="not both"):
        IntraImageTokenizer(keep=0.5, patch_size=8, max_tokens=3)


def test_vwt_keep_1_and_intra_keep_1_mean_the_same_in_bench_specs(sample_vocab_dir):
    from transformers import ViTConfig, ViTModel

    from vwt.bench.specs import parse_method_spec

    torch.manual_seed(0)
    model = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               image_size=64, patch_size=16), add_pooling_layer=False).eval()
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        vwt_all = parse_method_spec(f"vwt:vocab={sample_vocab_dir},keep=1").bind(model)(pixels)
        with pytest.warns(FutureWarning):
            intra_all = parse_method_spec("intra:keep=1").bind(model)(pixels)
    assert vwt_all.sequence_lengths.tolist() == intra_all.sequence_lengths.tolist() == [17, 17]  # CLS + 16
    intra_count = parse_method_spec("intra:max_tokens=4").bind(model)(pixels)
    assert intra_count.sequence_lengths.tolist() == [5, 5]  # max_tokens counts the image's tokens, CLS apart


def test_vwt_viz_keep_is_a_fraction_and_an_old_count_warns(tmp_path, capsys):
    from vwt.cli.viz import main as viz_main

    args = ["--method", "intra", "--image", "coffee", "--no-caption", "--scale", "1"]
    assert viz_main([*args, "--keep", "12", "--out", str(tmp_path / "old.png")]) == 0
    out, err = capsys.readouterr()
    assert "--max-tokens 12" in err and "max_tokens=12" in out
    assert viz_main([*args, "--max-tokens", "12", "--out", str(tmp_path / "new.png")]) == 0
    assert (tmp_path / "old.png").read_bytes() == (tmp_path / "new.png").read_bytes()
    assert viz_main([*args, "--keep", "1", "--out", str(tmp_path / "all.png")]) == 0
    assert "keep=1 " in capsys.readouterr().out  # every patch, not one
