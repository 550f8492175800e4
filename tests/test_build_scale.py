"""Parallel decoding, checkpoints and resume: the words never depend on how the build was run."""

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from vwt import build_vocabulary
from vwt.vocab.checkpoint import CheckpointError, checkpoint_path, load_checkpoint

# Small batches and chunks so that k-means has stepped several times and holds leftover patches
# at every chunk boundary: an interruption can fall anywhere in its state.
SMALL = dict(k=8, patches_per_image=48, batch_size=100, images_per_chunk=2, seed=3, progress=False)


@pytest.fixture(scope="module")
def photos(sample_photos):
    return [np.asarray(image) for _, image in sample_photos[:8]]


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory, sample_photos):
    folder = tmp_path_factory.mktemp("jpegs")
    for name, image in sample_photos[:8]:
        Image.fromarray(np.asarray(image)).convert("RGB").save(folder / f"{name.split('/')[-1]}.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return folder


def test_the_words_are_the_same_whatever_the_number_of_decoding_processes(jpeg_folder):
    inline = build_vocabulary(jpeg_folder, num_workers=0, **SMALL)
    parallel = build_vocabulary(jpeg_folder, num_workers=2, **SMALL)
    # Same machine, same process: the stream and k-means see identical arrays, so the words are identical.
    assert torch.equal(inline.centroids, parallel.centroids)
    assert parallel.config.num_images == inline.config.num_images == 8
    assert parallel.config.num_skipped == inline.config.num_skipped == 1


def _interrupting(images, after):
    """The images, with a real SIGINT sent to this process once ``after`` of them have been read."""
    for i, image in enumerate(images):
        if i == after:
            os.kill(os.getpid(), signal.SIGINT)
        yield image


def test_sigint_saves_a_checkpoint_and_resume_yields_the_words_of_an_uninterrupted_run(photos, tmp_path):
    whole = build_vocabulary(photos, **SMALL)
    out = tmp_path / "vocab"
    with pytest.raises(KeyboardInterrupt):
        build_vocabulary(_interrupting(photos, after=5), out=out, **SMALL)
    ckpt = checkpoint_path(out)
    assert not out.exists() and ckpt.exists()
    arrays, state = load_checkpoint(ckpt)
    assert state["stats"]["num_images"] == 6  # the chunk in flight (images 4, 5) finished first
    assert len(arrays["buffer"]) and state["kmeans"]["fitted"]  # stopped with k-means mid-stream
    resumed = build_vocabulary(photos, out=out, resume=True, **SMALL)
    assert torch.equal(resumed.centroids, whole.centroids)
    assert resumed.config.num_images == whole.config.num_images and resumed.config.num_patches == whole.config.num_patches
    assert not ckpt.exists()  # done: the checkpoint is gone


def test_a_crash_after_a_periodic_checkpoint_resumes_exactly(photos, tmp_path):
    def crashing():
        yield from photos[:5]
        raise RuntimeError("disk on fire")

    whole = build_vocabulary(photos, **SMALL)
    out = tmp_path / "vocab"
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_vocabulary(crashing(), out=out, checkpoint_every=2, **SMALL)
    assert load_checkpoint(checkpoint_path(out))[1]["stats"]["num_images"] == 4
    with pytest.raises(FileExistsError, match="--resume"):  # never silently thrown away
        build_vocabulary(photos, out=out, **SMALL)
    with pytest.raises(CheckpointError, match="seed"):  # nor resumed into another build
        build_vocabulary(photos, out=out, resume=True, **{**SMALL, "seed": 4})
    resumed = build_vocabulary(photos, out=out, resume=True, checkpoint_every=2, **SMALL)
    assert torch.equal(resumed.centroids, whole.centroids)


def test_resume_without_a_checkpoint_starts_afresh(photos, tmp_path):
    fresh = build_vocabulary(photos, out=tmp_path / "vocab", resume=True, **SMALL)
    assert torch.equal(fresh.centroids, build_vocabulary(photos, **SMALL).centroids)


def test_checkpoints_need_an_output_directory(photos):
    with pytest.raises(ValueError, match="need out"):
        build_vocabulary(photos, checkpoint_every=2, **SMALL)


def test_the_cli_documents_the_scale_flags():
    from vwt.cli.build_vocab import build_vocab_parser

    text = build_vocab_parser().format_help()
    for flag in ("--num-workers", "--checkpoint-every", "--resume", "--images-per-chunk"):
        assert flag in text
    args = build_vocab_parser().parse_args(["--data", "sample", "--k", "4", "--resume", "--checkpoint-every", "10"])
    assert args.resume and args.checkpoint_every == 10 and args.num_workers is None  # None: the machine's CPUs


def test_a_datasets_stream_is_decoded_lazily_and_learns_the_words_of_the_same_folder(jpeg_folder, monkeypatch):
    # The packaged `imagefolder` builder goes through the hub-dataset path (streaming, the image column cast
    # to undecoded bytes/paths, decoding in process_chunk) without any network.
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from vwt.vocab.stream import iter_chunks

    kwargs = {"data_dir": str(jpeg_folder)}
    first = next(iter_chunks("imagefolder", dataset_kwargs=kwargs))[1][0]
    assert first.image is None and first.source is not None  # not decoded by the reader
    via_datasets = build_vocabulary("imagefolder", dataset_kwargs=kwargs, **SMALL)
    via_folder = build_vocabulary(jpeg_folder, **SMALL)
    assert via_datasets.config.num_images == 8 and via_datasets.config.split == "train"
    assert torch.equal(via_datasets.centroids, via_folder.centroids)  # same files, same (sorted) order
