"""vwt-convert-vocab: the reference implementation's vocab.pt to a vocabulary that tokenizes like the reference."""

import dataclasses
import os

import numpy as np
import pytest
import torch
from PIL import Image

from vwt.cli.convert_vocab import main as convert_vocab_main
from vwt.tokenize.tokenizer import VisualWordTokenizer
from vwt.vocab.convert import convert_reference_vocab, load_reference_centroids, reference_image_processor
from vwt.vocab.torchsave import TorchSaveError, read_header, read_tensor
from vwt.vocab.vocabulary import VocabularyLoadError

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])


def reference_pixel_values(images):
    """The reference's ImageNet transform, written out with Pillow as torchvision runs it on PIL images:
    Resize((256, 256)) bilinear, CenterCrop(224) (offset round((256 - 224) / 2) = 16), ToTensor, Normalize."""
    out = []
    for image in images:
        resized = Image.fromarray(np.asarray(image)).convert("RGB").resize((256, 256), Image.BILINEAR)
        array = torch.from_numpy(np.array(resized)[16:240, 16:240]).permute(2, 0, 1).float() / 255
        out.append((array - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None])
    return torch.stack(out)


def reference_labels(pixel_values, vocab, thresh):
    """The reference tokenizer's grouping (vwt/inter.py of wearepal/visual-word-tokenizer): ``[B, N]`` labels."""
    patches = pixel_values.unfold(1, 3, 3).unfold(2, 16, 16).unfold(3, 16, 16)
    patches = patches.reshape(patches.size(0), -1, 3 * 16 * 16)
    words = torch.nn.functional.normalize(vocab, p=2, dim=-1).T.unsqueeze(0)
    scores = 1 - torch.matmul(torch.nn.functional.normalize(patches, p=2, dim=-1), words)
    scores, labels = scores.min(-1)
    masks = scores > thresh
    labels[masks] = torch.arange(int(masks.sum())) + vocab.size(0)  # each unmatched patch alone
    return labels


@pytest.fixture(scope="module")
def photos(sample_photos):
    return [image for _, image in sample_photos[:5]]


@pytest.fixture()
def vocab_pt(tmp_path, photos):
    """A reference-style vocab.pt: torch.save of a [k, 768] float tensor (real patches as words)."""
    patches = reference_pixel_values(photos).unfold(1, 3, 3).unfold(2, 16, 16).unfold(3, 16, 16).reshape(-1, 768)
    words = patches[torch.randperm(len(patches), generator=torch.Generator().manual_seed(0))[:24]].clone()
    path = tmp_path / "vocab.pt"
    torch.save(words, path)
    return path, words


def test_the_recorded_processor_is_the_reference_transform(photos):
    ours = reference_image_processor()(images=[Image.fromarray(np.asarray(p)).convert("RGB") for p in photos],
                                       return_tensors="pt")["pixel_values"]
    # Both resize the same uint8 image with Pillow's bilinear filter; they differ only in float rounding
    # of rescale and normalize (values are O(1), float32 eps ~1e-7).
    torch.testing.assert_close(ours, reference_pixel_values(photos), atol=1e-5, rtol=0)


def test_a_converted_vocab_tokenizes_like_the_reference_tokenizer(vocab_pt, photos, tmp_path, capsys):
    path, words = vocab_pt
    out = tmp_path / "converted"
    assert convert_vocab_main([str(path), "--out", str(out), "--source", "LeonidasY/inter-image-imgnet-1000"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "LeonidasY/inter-image-imgnet-1000" in card and "Resize((256, 256)) bilinear" in card
    for threshold in (0.05, 0.2):
        tokenizer = VisualWordTokenizer.from_pretrained(out, threshold=threshold)
        assert torch.equal(tokenizer.vocabulary.centroids, words)
        ours = tokenizer(photos)["patch_to_token"]  # [B, N], preprocessed by the recorded processor
        theirs = reference_labels(reference_pixel_values(photos), words, threshold)
        # Same partition of the patches into tokens: two patches share a token iff they share a reference label.
        assert torch.equal(ours[:, :, None] == ours[:, None, :], theirs[:, :, None] == theirs[:, None, :])
        assert (ours.amax(1) + 1 < 196).any()  # and patches really were merged


@pytest.mark.parametrize(
    "content, message",
    [
        ({"centroids": torch.zeros(4, 768)}, "expected one tensor, found dict"),
        (torch.zeros(768), "2-D float tensor"),
        (torch.zeros(4, 768, dtype=torch.int64), "2-D float tensor"),
        (torch.zeros(4, 700), "not 3 x p x p"),
    ],
)
def test_anything_but_one_2d_float_tensor_is_refused(tmp_path, content, message):
    path = tmp_path / "vocab.pt"
    torch.save(content, path)
    with pytest.raises(VocabularyLoadError, match=message):
        convert_reference_vocab(path)


class Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path, capsys):
    path = tmp_path / "vocab.pt"
    torch.save(Payload(), path)
    with pytest.raises(VocabularyLoadError, match=r"names \S*print, which is not a tensor storage"):
        convert_reference_vocab(path)
    assert "arbitrary code ran" not in capsys.readouterr().out


def test_from_pretrained_never_reads_a_vocab_pt(vocab_pt, tmp_path, monkeypatch):
    path, _ = vocab_pt
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    with pytest.raises((FileNotFoundError, ValueError)):
        VisualWordTokenizer.from_pretrained(str(path.parent))


@pytest.fixture()
def random_pt(tmp_path):
    """A small reference-style vocab.pt (random words) in its own folder, for the checks that never tokenize."""
    words = torch.randn(6, 768, generator=torch.Generator().manual_seed(0))
    (tmp_path / "download").mkdir()
    path = tmp_path / "download" / "vocab.pt"
    torch.save(words, path)
    return path, words


def test_convert_overwrite_onto_a_folder_of_unrelated_files_is_refused_and_keeps_them(random_pt, tmp_path, capsys):
    path, _ = random_pt
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert convert_vocab_main([str(path), "--out", str(precious), "--overwrite"]) == 1
    assert "is not a vocabulary" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_convert_overwrite_onto_the_folder_holding_its_input_is_refused_and_keeps_the_input(random_pt, capsys):
    path, words = random_pt
    for out in (path.parent, path.parent.parent):  # the folder of vocab.pt, and one above it
        assert convert_vocab_main([str(path), "--out", str(out), "--overwrite"]) == 1
        assert "holds the input" in capsys.readouterr().err
    assert torch.equal(load_reference_centroids(path), words)


def test_convert_overwrite_replaces_a_vocabulary_or_an_empty_folder(random_pt, tmp_path):
    path, words = random_pt
    for out in (tmp_path / "empty", tmp_path / "vocab"):
        out.mkdir()
        assert convert_vocab_main([str(path), "--out", str(out)]) == 1  # exists: needs --overwrite
        assert convert_vocab_main([str(path), "--out", str(out), "--overwrite"]) == 0
        assert convert_vocab_main([str(path), "--out", str(out), "--overwrite"]) == 0  # a vocabulary now
        assert torch.equal(VisualWordTokenizer.from_pretrained(out).vocabulary.centroids, words)


def test_convert_an_expanded_tensor_of_gigabytes_is_refused_before_it_is_materialised(tmp_path, capsys):
    path = tmp_path / "vocab.pt"
    torch.save(torch.zeros(768).expand(2_000_000, 768), path)  # a few KB on disk, 6 GB as a tensor
    assert path.stat().st_size < 10_000
    assert convert_vocab_main([str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "[2000000, 768] tensor takes 6,144,000,000 bytes" in err and "--max-bytes" in err
    assert not (tmp_path / "out").exists()
    # The limit is adjustable: a small one refuses a small vocabulary, naming the limit.
    torch.save(torch.zeros(4, 768), path)
    with pytest.raises(VocabularyLoadError, match="over the limit of 1,000 bytes"):
        convert_reference_vocab(path, max_bytes=1000)
    assert convert_reference_vocab(path, max_bytes=path.stat().st_size).config.k == 4  # the file is above the tensor


def test_convert_a_fifo_as_input_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "vocab.pt"
    os.mkfifo(fifo)
    with pytest.raises(VocabularyLoadError, match="named pipe"):
        convert_reference_vocab(fifo)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_the_reader_gives_what_torch_save_wrote_without_torch_load(tmp_path, monkeypatch, dtype):
    words = torch.randn(5, 12, generator=torch.Generator().manual_seed(0)).to(dtype)
    views = {"plain": words, "transposed": words.t(), "sliced": words[1:4, ::2], "expanded": words[0].expand(3, 12)}
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    for name, view in views.items():
        path = tmp_path / f"{name}.pt"
        torch.save(view, path)
        spec = read_header(path)
        assert (spec.shape, spec.dtype) == (tuple(view.shape), dtype), name
        assert torch.equal(read_tensor(path, spec), view), name


def test_the_reader_gives_lists_and_dicts_of_unread_tensors(tmp_path):
    path = tmp_path / "nested.pt"
    torch.save({"a": [torch.zeros(2, 3), torch.ones(4)], "b": 7}, path)
    header = read_header(path)
    assert header["b"] == 7 and [t.shape for t in header["a"]] == [(2, 3), (4,)]


@pytest.mark.parametrize("case", ["not a zip", "legacy format", "storage cut short", "view past its storage"])
def test_the_reader_refuses_a_damaged_archive_with_a_clear_error(tmp_path, case):
    path = tmp_path / "bad.pt"
    if case == "not a zip":
        path.write_bytes(b"hello")
    elif case == "legacy format":
        torch.save(torch.zeros(2, 3), path, _use_new_zipfile_serialization=False)
    else:
        torch.save(torch.zeros(2, 3), path)
    if case in ("not a zip", "legacy format"):
        with pytest.raises(TorchSaveError, match="not a readable torch.save archive"):
            read_header(path)
        return
    spec = read_header(path)
    if case == "storage cut short":
        spec = dataclasses.replace(spec, storage_numel=7)
        match = "missing or not 28 bytes"
    else:
        spec = dataclasses.replace(spec, shape=(3, 3))
        match = "reaches past its storage of 6 elements"
    with pytest.raises(TorchSaveError, match=match):
        read_tensor(path, spec)
