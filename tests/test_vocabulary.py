import json

import pytest
import torch
from safetensors.torch import save_file

from vwt import VisualVocabulary, VocabularyConfig, VocabularyLoadError
from vwt.preprocess import default_image_processor, preprocess_config


def _vocab(k=4, patch_size=2):
    config = VocabularyConfig(
        k=k, patch_size=patch_size, num_channels=3, preprocess=preprocess_config(default_image_processor()), seed=7
    )
    return VisualVocabulary(torch.randn(k, 3 * patch_size**2), config)


def test_save_then_load_is_bit_exact_config_included(tmp_path):
    vocab = _vocab()
    vocab.save_pretrained(tmp_path / "v")
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["README.md", "config.json", "vocab.safetensors"]
    loaded = VisualVocabulary.from_pretrained(tmp_path / "v")
    assert torch.equal(loaded.centroids, vocab.centroids)
    assert loaded.centroids.dtype == torch.float32
    assert loaded.config == vocab.config
    assert loaded.config.preprocess.image_size == (224, 224)


def test_card_names_k_patch_size_and_library(tmp_path):
    _vocab().save_pretrained(tmp_path / "v")
    card = (tmp_path / "v" / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: vwt" in card
    assert "k=4, patch 2" in card


def _saved(tmp_path):
    vocab = _vocab()
    vocab.save_pretrained(tmp_path / "v")
    return tmp_path / "v"


def test_truncated_safetensors_is_a_clear_error_naming_the_file(tmp_path):
    path = _saved(tmp_path)
    data = (path / "vocab.safetensors").read_bytes()
    (path / "vocab.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(VocabularyLoadError, match="vocab.safetensors"):
        VisualVocabulary.from_pretrained(path)


def test_wrong_shape_is_a_clear_error(tmp_path):
    path = _saved(tmp_path)
    save_file({"centroids": torch.zeros(5, 12)}, str(path / "vocab.safetensors"))
    with pytest.raises(VocabularyLoadError, match=r"shape \(5, 12\).*\(4, 12\)"):
        VisualVocabulary.from_pretrained(path)


def test_nan_centroids_are_a_clear_error(tmp_path):
    path = _saved(tmp_path)
    centroids = torch.zeros(4, 12)
    centroids[2, 3] = float("nan")
    save_file({"centroids": centroids}, str(path / "vocab.safetensors"))
    with pytest.raises(VocabularyLoadError, match="NaN"):
        VisualVocabulary.from_pretrained(path)


def test_wrong_dtype_is_a_clear_error(tmp_path):
    path = _saved(tmp_path)
    save_file({"centroids": torch.zeros(4, 12, dtype=torch.float16)}, str(path / "vocab.safetensors"))
    with pytest.raises(VocabularyLoadError, match="float32"):
        VisualVocabulary.from_pretrained(path)


def test_config_that_disagrees_with_the_tensor_is_a_clear_error(tmp_path):
    path = _saved(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["patch_size"] = 4  # 3 * 4 * 4 = 48 values per word, the tensor has 12
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VocabularyLoadError, match=r"config\.json"):
        VisualVocabulary.from_pretrained(path)


def test_config_with_missing_or_unknown_fields_is_a_clear_error(tmp_path):
    path = _saved(tmp_path)
    config = json.loads((path / "config.json").read_text())
    del config["k"]
    config["colour"] = "blue"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VocabularyLoadError, match=r"config\.json.*missing fields \['k'\].*unknown fields \['colour'\]"):
        VisualVocabulary.from_pretrained(path)


def test_missing_file_is_a_clear_error(tmp_path):
    path = _saved(tmp_path)
    (path / "vocab.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="vocab.safetensors"):
        VisualVocabulary.from_pretrained(path)


def test_config_values_of_the_wrong_type_are_a_clear_error(tmp_path):
    path = _saved(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["seed"] = "zero"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VocabularyLoadError, match=r"config\.json.*wrong type: seed='zero'"):
        VisualVocabulary.from_pretrained(path)


def test_a_mistyped_local_path_is_a_file_not_found_error_not_a_hub_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory: ./vocabularies/typo"):
        VisualVocabulary.from_pretrained("./vocabularies/typo")
