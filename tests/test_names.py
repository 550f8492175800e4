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
