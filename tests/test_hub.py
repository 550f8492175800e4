"""Hugging Face Hub round trips, offline: loading from a local hub cache, and what an upload would send."""

import dataclasses
import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard, RepoUrl, constants

from vwt import VisualVocabulary
from vwt.cli.build_vocab import main as build_vocab_main
from vwt.tokenize.tokenizer import VisualWordTokenizer
from vwt.vocab.card import DEFAULT_THRESHOLDS, token_count_stats

VOCAB_FILES = ["README.md", "config.json", "vocab.safetensors"]
TOKENIZER_FILES = ["README.md", "config.json", "tokenizer_config.json", "vocab.safetensors"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def no_network(monkeypatch):
    """Fail, and record, any attempt to open a socket connection."""
    attempts = []

    def connect(self, address):
        attempts.append(address)
        raise OSError(f"network disabled in this test (tried {address})")

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


@pytest.fixture()
def vocab(sample_vocab_dir):
    """Real words (k=32, CLIP preprocessing, patch 16) with an ImageNet-style provenance."""
    words = VisualVocabulary.from_pretrained(sample_vocab_dir)
    config = dataclasses.replace(
        words.config, dataset="imagenet", split="train", command="vwt-build-vocab --data imagenet --k 32 --seed 0"
    )
    return VisualVocabulary(words.centroids, config)


def _lay_out_hf_cache(folder: Path, cache: Path, repo_id: str) -> Path:
    """Put ``folder``'s files where the hub client caches ``repo_id`` at revision main; returns the snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def _assert_same_vocabulary(loaded: VisualVocabulary, expected: VisualVocabulary) -> None:
    assert torch.equal(loaded.centroids, expected.centroids)
    assert loaded.config == expected.config


# ------------------------------------------------------------------------------------ loading offline
def test_vocabulary_loads_from_a_local_hf_cache_with_local_files_only(vocab, tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # local_files_only alone must be enough
    vocab.save_pretrained(tmp_path / "saved")
    _lay_out_hf_cache(tmp_path / "saved", tmp_path / "cache", "vwt-org/words-k32")
    loaded = VisualVocabulary.from_pretrained("vwt-org/words-k32", cache_dir=tmp_path / "cache", local_files_only=True)
    _assert_same_vocabulary(loaded, vocab)
    assert no_network == []


def test_vocabulary_loads_from_the_default_hf_cache_with_hf_hub_offline(vocab, tmp_path, monkeypatch, no_network):
    # huggingface_hub 2.x reads HF_HUB_OFFLINE into constants.HF_HUB_OFFLINE once, at import:
    # set the environment for anything that starts later, and the constant for this process.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # the default cache_dir
    vocab.save_pretrained(tmp_path / "saved")
    _lay_out_hf_cache(tmp_path / "saved", tmp_path / "hub", "vwt-org/words-k32")
    _assert_same_vocabulary(VisualVocabulary.from_pretrained("vwt-org/words-k32"), vocab)
    assert no_network == []


def test_an_offline_repo_missing_from_the_cache_is_a_clear_error(tmp_path, monkeypatch, no_network):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="local cache"):  # huggingface_hub's LocalEntryNotFoundError
        VisualVocabulary.from_pretrained("vwt-org/absent", cache_dir=tmp_path / "empty")


def test_tokenizer_loads_from_a_local_hf_cache_keeping_its_threshold(vocab, tmp_path, monkeypatch, no_network):
    VisualWordTokenizer(vocab, threshold=0.25).save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == TOKENIZER_FILES
    snapshot = _lay_out_hf_cache(tmp_path / "saved", tmp_path / "cache", "vwt-org/tokenizer")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    tokenizer = VisualWordTokenizer.from_pretrained("vwt-org/tokenizer", cache_dir=tmp_path / "cache",
                                                    local_files_only=True)
    assert tokenizer.threshold == 0.25
    _assert_same_vocabulary(tokenizer.vocabulary, vocab)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    tokenizer = VisualWordTokenizer.from_pretrained("vwt-org/tokenizer", cache_dir=tmp_path / "cache")
    assert tokenizer.threshold == 0.25
    assert VisualWordTokenizer.from_pretrained("vwt-org/tokenizer", cache_dir=tmp_path / "cache",
                                               threshold=0.4).threshold == 0.4  # an explicit one wins

    (snapshot / "tokenizer_config.json").unlink()  # a plain vocabulary repo: the default threshold
    plain = VisualWordTokenizer.from_pretrained("vwt-org/tokenizer", cache_dir=tmp_path / "cache")
    assert plain.threshold == 0.1
    assert no_network == []


# ------------------------------------------------------------------------------------ uploads
@pytest.fixture()
def fake_hub(monkeypatch):
    """Replace the two HfApi calls ModelHubMixin.push_to_hub makes; record what would be uploaded."""
    calls = {"create_repo": [], "uploads": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append({"repo_id": repo_id, "token": self.token, **kwargs})
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)  # a temporary directory, gone after the call: read it now
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        calls["uploads"].append({"repo_id": repo_id, "files": files, **kwargs})
        return f"https://huggingface.co/{repo_id}/commit/{COMMIT}"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def _uploaded_vocabulary(files: dict, tmp_path: Path) -> VisualVocabulary:
    folder = tmp_path / "uploaded"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return VisualVocabulary.from_pretrained(folder)


def _assert_card(text: str, k: int, command: str, datasets: list | None) -> None:
    card = ModelCard(text)
    assert text.startswith("---\n")
    assert card.data.library_name == "vwt"
    assert card.data.license == "apache-2.0"
    assert {"vision", "visual-words", "token-reduction"} <= set(card.data.tags)
    assert card.data.datasets == datasets
    assert f"| words (k) | {k} |" in card.text and f"# Visual words: k={k}, patch 16" in card.text
    assert f"```bash\n{command}\n```" in card.text
    assert "## Token counts" in card.text
    for threshold in DEFAULT_THRESHOLDS:
        assert f"| {threshold:g} |" in card.text


def test_push_to_hub_uploads_words_config_and_card(vocab, tmp_path, fake_hub, no_network):
    url = vocab.push_to_hub("vwt-org/words-k32", private=True, token="hf_not_a_real_token")
    assert url == f"https://huggingface.co/vwt-org/words-k32/commit/{COMMIT}"
    [create] = fake_hub["create_repo"]
    assert create["repo_id"] == "vwt-org/words-k32" and create["private"] is True and create["exist_ok"] is True
    assert create["token"] == "hf_not_a_real_token"
    [upload] = fake_hub["uploads"]
    assert upload["repo_id"] == "vwt-org/words-k32" and upload["repo_type"] == "model"
    assert sorted(upload["files"]) == VOCAB_FILES
    _assert_card(upload["files"]["README.md"].decode(), 32, vocab.config.command, ["ILSVRC/imagenet-1k"])
    _assert_same_vocabulary(_uploaded_vocabulary(upload["files"], tmp_path), vocab)
    assert no_network == []


def test_save_pretrained_with_push_to_hub_saves_and_uploads_the_same_files(vocab, tmp_path, fake_hub, no_network):
    vocab.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id="vwt-org/words-k32")
    [upload] = fake_hub["uploads"]
    assert upload["repo_id"] == "vwt-org/words-k32"
    local = {p.name: p.read_bytes() for p in (tmp_path / "local").iterdir()}
    assert sorted(local) == VOCAB_FILES
    assert upload["files"] == local  # byte for byte: card included
    _assert_card(local["README.md"].decode(), 32, vocab.config.command, ["ILSVRC/imagenet-1k"])
    assert no_network == []


def test_tokenizer_push_to_hub_uploads_its_threshold(vocab, tmp_path, fake_hub, no_network):
    VisualWordTokenizer(vocab, threshold=0.3).push_to_hub("vwt-org/tokenizer")
    [upload] = fake_hub["uploads"]
    assert sorted(upload["files"]) == TOKENIZER_FILES
    saved = json.loads(upload["files"]["tokenizer_config.json"])
    assert saved == {"threshold": 0.3, "max_tokens": None, "keep": None, "connected": False,
                     "window": None, "norm_band": None, "min_keep": None}
    card = upload["files"]["README.md"].decode()
    _assert_card(card, 32, vocab.config.command, ["ILSVRC/imagenet-1k"])
    assert "| tokenizer threshold | 0.3 " in card and "| 0.3 (this tokenizer) |" in card
    assert no_network == []


def test_cli_push_to_hub_uploads_the_built_vocabulary(tmp_path, fake_hub, no_network, capsys):
    out = tmp_path / "built"
    argv = ["--data", "sample", "--k", "8", "--max-images", "2", "--seed", "0", "--out", str(out),
            "--push-to-hub", "vwt-org/cli-words", "--no-progress"]
    assert build_vocab_main(argv) == 0
    assert f"pushed to https://huggingface.co/vwt-org/cli-words/commit/{COMMIT}" in capsys.readouterr().out
    [create] = fake_hub["create_repo"]
    assert create["repo_id"] == "vwt-org/cli-words"
    [upload] = fake_hub["uploads"]
    local = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(upload["files"]) == VOCAB_FILES and upload["files"] == local
    command = "vwt-build-vocab " + " ".join(argv)
    _assert_card(upload["files"]["README.md"].decode(), 8, command, None)  # "sample" is no hub dataset
    assert _uploaded_vocabulary(upload["files"], tmp_path).config.num_images == 2
    assert no_network == []


# ------------------------------------------------------------------------------------ card statistics
def test_card_token_counts_are_the_tokenizers_counts_on_the_sample_photos(vocab, sample_photos):
    from vwt.preprocess import image_processor_from_config, preprocess_images

    processor = image_processor_from_config(vocab.config.preprocess)
    pixel_values = preprocess_images([im for _, im in sample_photos], processor)
    stats = token_count_stats(vocab, (-1.0, 0.1, 0.3, 2.0))
    assert [s.threshold for s in stats] == [-1.0, 0.1, 0.3, 2.0]
    for s in stats:
        counts = VisualWordTokenizer(vocab, threshold=s.threshold)(pixel_values=pixel_values)["num_tokens"]
        assert (s.num_images, s.num_patches) == (len(sample_photos), 196)
        assert (s.min, s.max) == (int(counts.min()), int(counts.max()))
        assert s.mean == pytest.approx(counts.double().mean().item())
    assert stats[0].mean == 196  # -1 merges nothing
    assert stats[0].mean > stats[1].mean >= stats[2].mean >= stats[3].mean
    assert stats[3].max <= vocab.config.k  # 2 sends every patch to its word


def test_card_of_a_vocabulary_whose_images_do_not_fit_the_photos_has_no_counts_but_is_written(vocab, tmp_path):
    odd = dataclasses.replace(vocab.config, num_channels=1, preprocess=dataclasses.replace(
        vocab.config.preprocess, image_mean=(0.5,), image_std=(0.5,),
        processor={**vocab.config.preprocess.processor, "image_mean": [0.5], "image_std": [0.5]}))
    one_channel = VisualVocabulary(vocab.centroids[:, :256].contiguous(), odd)
    one_channel.save_pretrained(tmp_path / "gray")
    card = (tmp_path / "gray" / "README.md").read_text()
    assert "# Visual words: k=32, patch 16" in card and "## Token counts" not in card
