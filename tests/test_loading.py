"""Loading vocabularies and tokenizers: bad files name themselves, inconsistent configs are refused,
mistyped local paths never go to the hub."""

import dataclasses
import json
import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vwt import (
    VisualVocabulary,
    VocabularyConfig,
    VocabularyLoadError,
    build_vocabulary,
)
from vwt.config import ConfigError
from vwt.preprocess import (
    default_image_processor,
    load_image_processor,
    preprocess_config,
)
from vwt.tokenize.tokenizer import VisualWordTokenizer
from vwt.vocab.data import iter_images


@pytest.fixture()
def saved(tmp_path):
    config = VocabularyConfig(k=4, patch_size=16, num_channels=3, preprocess=preprocess_config(default_image_processor()))
    VisualWordTokenizer(VisualVocabulary(torch.randn(4, 768), config), threshold=0.2).save_pretrained(tmp_path / "v")
    return tmp_path / "v"


def _edit_config(directory, edit):
    config = json.loads((directory / "config.json").read_text())
    edit(config)
    (directory / "config.json").write_text(json.dumps(config))


def test_a_config_json_symlinked_to_dev_zero_is_refused_without_reading_it(saved):
    (saved / "config.json").unlink()
    (saved / "config.json").symlink_to("/dev/zero")
    with pytest.raises(VocabularyLoadError, match=r"v/config\.json: is a character device, not a regular file"):
        VisualVocabulary.from_pretrained(saved)


@pytest.mark.parametrize(("content", "message"), [
    (b"[1, 2, 3]", "expected a JSON object for VocabularyConfig, got list"),
    (b"\x00\x01\xfe\xff binary", "not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
], ids=["json-list", "binary", "nested-100k-deep"])
def test_a_config_json_that_is_a_list_binary_or_nested_100k_deep_is_an_error_naming_it(saved, content, message):
    (saved / "config.json").write_bytes(content)
    with pytest.raises(VocabularyLoadError, match=rf"v/config\.json: .*{message}"):
        VisualVocabulary.from_pretrained(saved)


def test_a_tokenizer_config_json_that_is_not_json_is_an_error_naming_it(saved):
    (saved / "tokenizer_config.json").write_text("threshold = 0.2")
    with pytest.raises(VocabularyLoadError, match=r"v/tokenizer_config\.json: not valid JSON"):
        VisualWordTokenizer.from_pretrained(saved)
    (saved / "tokenizer_config.json").write_text('{"threshold": "high"}')
    with pytest.raises(VocabularyLoadError, match=r"tokenizer_config\.json: TokenizerConfig fields of the wrong type"):
        VisualWordTokenizer.from_pretrained(saved)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["preprocess"].update(image_std=[0.0, 0.26, 0.27]), r"image_std must be positive"),
    (lambda c: c["preprocess"]["processor"]["crop_size"].update(height=448, width=448),
     r"the processor makes 448x448 images but image_size is \(224, 224\)"),
    (lambda c: c["preprocess"].update(image_mean=[0.5, 0.5, 0.5]), r"the processor normalizes with mean \[0\.48"),
    (lambda c: c["preprocess"].update(image_size=[224, 220]), r"processor makes 224x224 images but image_size"),
], ids=["std-zero", "crop-448-image-size-224", "mean-not-the-processors", "size-not-a-patch-multiple"])
def test_a_vocabulary_config_with_inconsistent_preprocessing_is_refused_at_load(saved, edit, message):
    _edit_config(saved, edit)
    with pytest.raises(VocabularyLoadError, match=rf"config\.json: .*{message}"):
        VisualVocabulary.from_pretrained(saved)


def test_a_vocabulary_config_with_a_nan_mean_is_refused_in_the_file_and_in_python(saved):
    (saved / "config.json").write_text((saved / "config.json").read_text().replace("0.48145466", "NaN", 1))
    with pytest.raises(VocabularyLoadError, match=r"config\.json: not valid JSON: NaN is not valid JSON"):
        VisualVocabulary.from_pretrained(saved)
    pre = preprocess_config(default_image_processor())
    with pytest.raises(ConfigError, match="image_mean and image_std must be finite"):
        dataclasses.replace(pre, image_mean=(math.nan, 0.5, 0.5))


def test_an_image_size_that_is_no_multiple_of_the_patch_size_is_refused():
    pre = preprocess_config(default_image_processor())
    with pytest.raises(ConfigError, match=r"image_size \(224, 224\) is not a multiple of patch_size 15"):
        VocabularyConfig(k=4, patch_size=15, num_channels=3, preprocess=pre)


# --- mistyped local paths never go to the hub -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["vocabularies/nope", "./nope", "nope/a/b", "/no/such/dir", "~/no-such-vwt-dir"])
def test_a_mistyped_local_vocabulary_path_is_no_such_directory_not_a_hub_lookup(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vocabularies").mkdir()  # so "vocabularies/nope" is a mistyped folder, not owner/name
    for load in (VisualVocabulary.from_pretrained, VisualWordTokenizer.from_pretrained):
        with pytest.raises(FileNotFoundError, match="no such directory: .*not looked up on the hub"):
            load(name)


def test_a_mistyped_image_folder_is_no_such_folder_not_a_dataset_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img").mkdir()
    with pytest.raises(FileNotFoundError, match="no such folder: img/typo_folder.*img/ is a local directory"):
        build_vocabulary("img/typo_folder", k=4, progress=False)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        iter_images("./typo")
    with pytest.raises(ValueError, match="empty image source"):
        iter_images("")


def test_a_mistyped_image_processor_directory_is_no_such_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_image_processor(tmp_path / "no-processor-here")


# --- images in a folder -----------------------------------------------------------------------------------------


def test_an_image_over_the_decompression_bomb_limit_in_a_folder_is_skipped_and_counted(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (64, 64), "white").save(folder / "a_small.png")
    Image.new("RGB", (300, 300), "gray").save(folder / "b_huge.png")
    Image.new("RGB", (64, 64), "black").save(folder / "c_small.png")
    # Pillow refuses images over twice MAX_IMAGE_PIXELS: lower it rather than write a 180-megapixel file.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    with caplog.at_level(logging.WARNING):
        vocab = build_vocabulary(folder, k=2, progress=False)
    assert vocab.config.num_images == 2 and vocab.config.num_skipped == 1
    assert any("b_huge.png" in r.getMessage() and "DecompressionBombError" in r.getMessage() for r in caplog.records)
    assert np.isfinite(vocab.centroids.numpy()).all()


def test_a_vocab_safetensors_symlinked_to_dev_zero_is_refused_without_reading_it(saved):
    (saved / "vocab.safetensors").unlink()
    (saved / "vocab.safetensors").symlink_to("/dev/zero")
    with pytest.raises(VocabularyLoadError, match=r"vocab\.safetensors: is a character device, not a regular file"):
        VisualVocabulary.from_pretrained(saved)


def test_a_config_json_that_is_a_directory_is_an_error_naming_it(saved):
    (saved / "config.json").unlink()
    (saved / "config.json").mkdir()
    with pytest.raises(VocabularyLoadError, match=r"config\.json: is a directory, not a regular file"):
        VisualVocabulary.from_pretrained(saved)
