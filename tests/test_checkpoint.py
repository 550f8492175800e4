"""Checkpoints are checked completely before use, refuse a changed source, and nothing a crash leaves is lost.

Every tampered checkpoint below is refused with a CheckpointError that names the file and the field,
before a single image is read (the stream given to the resumed build fails if it is ever read).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file

from vwt import build_vocabulary
from vwt.vocab.build import WorkerDiedError
from vwt.vocab.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint

SMALL = dict(k=8, patches_per_image=48, batch_size=100, images_per_chunk=2, seed=3, progress=False)


@pytest.fixture(scope="module")
def photos(sample_photos):
    return [np.asarray(image) for _, image in sample_photos[:8]]


@pytest.fixture(scope="module")
def whole(photos):
    """The words of an uninterrupted build of the photos."""
    return build_vocabulary(photos, **SMALL).centroids


@pytest.fixture(scope="module")
def saved(photos, tmp_path_factory):
    """``(arrays, state)`` of a real checkpoint after 6 photos: k-means fitted, 96 patches in its buffer."""
    def crashing():
        yield from photos[:7]
        raise RuntimeError("crash")

    out = tmp_path_factory.mktemp("saved") / "vocab"
    with pytest.raises(RuntimeError, match="crash"):
        build_vocabulary(crashing(), out=out, checkpoint_every=2, **SMALL)
    arrays, state = load_checkpoint(checkpoint_path(out))
    assert state["stats"]["num_images"] == 6 and state["kmeans"]["fitted"] and len(arrays["buffer"]) == 96
    return arrays, {key: value for key, value in state.items() if key != "format"}


def never_read():
    raise AssertionError("the resumed build read an image")
    yield


def _resume_refuses(out, field):
    """Resume ``out`` with a stream that must never be read; return the CheckpointError's message."""
    with pytest.raises(CheckpointError) as info:
        build_vocabulary(never_read(), out=out, resume=True, **SMALL)
    message = str(info.value)
    assert str(checkpoint_path(out)) in message and field in message, message
    return message


TAMPERINGS = {
    "nan_centroids": (lambda a, s: a["cluster_centers"].__setitem__((0, 0), np.nan), "cluster_centers: NaN"),
    "inf_centroids": (lambda a, s: a["cluster_centers"].__setitem__((3, 5), np.inf), "cluster_centers: NaN or infinite"),
    "negative_counts": (lambda a, s: a["counts"].__setitem__(2, -5.0), "counts: a count outside"),
    "counts_shorter_than_k": (lambda a, s: a.__setitem__("counts", a["counts"][:5].copy()), "counts: shape [5]"),
    "centroids_float64": (lambda a, s: a.__setitem__("cluster_centers", a["cluster_centers"].astype(np.float64)),
                          "cluster_centers: dtype F64"),
    "centroids_of_another_width": (lambda a, s: a.__setitem__("cluster_centers", a["cluster_centers"][:, :700].copy()),
                                   "cluster_centers: shape [8, 700]"),
    "a_buffer_of_a_whole_batch_or_more": (lambda a, s: a.__setitem__("buffer", np.zeros((100, 768), np.float32)),
                                          "buffer: shape [100, 768]"),
    "rounds_past_the_data": (lambda a, s: s.__setitem__("rounds", 1000), "rounds: 1000 is outside"),
    "negative_rounds": (lambda a, s: s.__setitem__("rounds", -1), "rounds: -1 is outside"),
    "num_patches_minus_one": (lambda a, s: s["stats"].__setitem__("num_patches", -1), "stats.num_patches: -1"),
    "num_patches_not_those_of_the_images": (lambda a, s: s["stats"].__setitem__("num_patches", 300),
                                            "stats.num_patches: 300 patches from 6 images"),
    "fitted_false": (lambda a, s: s["kmeans"].__setitem__("fitted", False), "kmeans: unknown"),
    "fitted_not_a_bool": (lambda a, s: s["kmeans"].__setitem__("fitted", "yes"), "kmeans.fitted"),
    "missing_stats": (lambda a, s: s.pop("stats"), "state: missing stats"),
    "missing_a_kmeans_scalar": (lambda a, s: s["kmeans"]["scalars"].pop("n_steps_"), "kmeans.scalars: missing n_steps_"),
    "stats_of_the_wrong_type": (lambda a, s: s["stats"].__setitem__("num_images", "6"),
                                "stats.num_images: expected an integer, found str"),
    "unknown_kmeans_attribute_partial_fit": (lambda a, s: s["kmeans"]["scalars"].__setitem__("partial_fit", 1),
                                             "kmeans.scalars: unknown 'partial_fit'"),
    "n_steps_beyond_the_patches": (lambda a, s: s["kmeans"]["scalars"].__setitem__("n_steps_", 50),
                                   "kmeans.scalars.n_steps_: 50 steps"),
    "a_random_state_of_another_generator": (lambda a, s: s["kmeans"]["random_state"].__setitem__("name", "PCG64"),
                                            "kmeans.random_state.name"),
    "a_source_that_is_not_an_object": (lambda a, s: s.__setitem__("source", "folder"), "source: the images of"),
    "an_unknown_array": (lambda a, s: a.__setitem__("labels", np.zeros(3, np.int64)), "labels: unexpected array"),
}


@pytest.mark.parametrize("case", sorted(TAMPERINGS))
def test_a_tampered_checkpoint_is_refused_naming_the_file_and_field_before_any_image_is_read(case, saved, tmp_path):
    tamper, field = TAMPERINGS[case]
    arrays, state = {k: v.copy() for k, v in saved[0].items()}, json.loads(json.dumps(saved[1]))
    tamper(arrays, state)
    out = tmp_path / "vocab"
    save_checkpoint(checkpoint_path(out), arrays, state)
    _resume_refuses(out, field)
    assert checkpoint_path(out).exists() and not out.exists()  # nothing deleted, nothing written


def test_checkpoint_metadata_nested_100000_deep_is_refused(saved, tmp_path):
    out = tmp_path / "vocab"
    save_file(dict(saved[0]), checkpoint_path(out), metadata={"vwt_checkpoint": "[" * 100_000 + "]" * 100_000})
    _resume_refuses(out, "vwt_checkpoint: state nested too deeply")


def test_checkpoint_path_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    out = tmp_path / "vocab"
    os.mkfifo(checkpoint_path(out))  # opening it for reading would wait for a writer forever
    _resume_refuses(out, "not a regular file")


def test_an_untampered_checkpoint_resumes_to_the_words_of_an_uninterrupted_build(saved, photos, whole, tmp_path):
    out = tmp_path / "vocab"
    save_checkpoint(checkpoint_path(out), *saved)
    resumed = build_vocabulary(photos, out=out, resume=True, **SMALL)
    assert torch.equal(resumed.centroids, whole) and resumed.config.num_images == 8


@pytest.fixture()
def folder(tmp_path, sample_photos):
    """9 JPEGs and an unfinished build of them (k too large to finish) that left a checkpoint after 8."""
    folder = tmp_path / "jpegs"
    folder.mkdir()
    for name, image in sample_photos[:9]:
        Image.fromarray(np.asarray(image)).convert("RGB").save(folder / f"{name.split('/')[-1]}.jpg", quality=90)
    out = tmp_path / "vocab"
    with pytest.raises(ValueError, match="not enough patches to learn 1000 words: 432 patches from 9 images"):
        build_vocabulary(folder, out=out, checkpoint_every=2, **{**SMALL, "k": 1000})
    assert load_checkpoint(checkpoint_path(out))[1]["stats"]["num_images"] == 8
    return folder, out


CHANGES = {
    "a_file_added": lambda f: shutil.copy(f / "astronaut.jpg", f / "zz_new.jpg"),
    "a_file_removed": lambda f: (f / "coffee.jpg").unlink(),
    "a_file_renamed": lambda f: (f / "coffee.jpg").rename(f / "coffee2.jpg"),
    "a_file_modified": lambda f: os.utime(f / "chelsea.jpg", ns=(0, 10**18)),
    "every_file_replaced": lambda f: [p.write_bytes(p.read_bytes() + b"\0") for p in f.iterdir()],
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_resume_after_the_image_folder_changed_is_refused_saying_how_to_start_afresh(change, folder):
    folder, out = folder
    CHANGES[change](folder)
    with pytest.raises(CheckpointError) as info:
        build_vocabulary(folder, out=out, resume=True, **{**SMALL, "k": 1000})
    message = str(info.value)
    assert str(checkpoint_path(out)) in message and "source: the images of" in message
    assert "delete the checkpoint and run again without --resume" in message


def test_resume_of_an_unchanged_folder_continues_where_it_stopped(folder):
    folder, out = folder
    # It resumes after 8 photos, reads the 9th, and counts each once (the build then still lacks patches).
    with pytest.raises(ValueError, match="432 patches from 9 images"):
        build_vocabulary(folder, out=out, resume=True, **{**SMALL, "k": 1000})


def test_sigkill_while_a_checkpoint_is_written_leaves_temporaries_that_the_next_run_removes(saved, photos, whole,
                                                                                          tmp_path):
    out = tmp_path / "vocab"
    save_checkpoint(checkpoint_path(out), *saved)
    # A process killed between writing the new checkpoint and renaming it onto the old one.
    script = ("import os, sys, numpy as np\n"
              "from vwt.vocab import checkpoint\n"
              "os.replace = lambda *a: os.kill(os.getpid(), 9)\n"
              "checkpoint.save_checkpoint(sys.argv[1], {'x': np.zeros((1000, 768), np.float32)}, {})\n")
    killed = subprocess.run([sys.executable, "-c", script, str(checkpoint_path(out))], capture_output=True, timeout=120)
    assert killed.returncode == -9
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".vocab.tmp-")]
    assert len(leftovers) == 1 and any(leftovers[0].iterdir())  # the 3 MB file in its temporary directory
    resumed = build_vocabulary(photos, out=out, resume=True, **SMALL)  # the old checkpoint is intact
    assert torch.equal(resumed.centroids, whole)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab"]  # no temporary, no checkpoint, no lock


class KillsItsWorker:
    """An image whose unpickling ends the decoding process at once, as ``kill -9`` would."""

    def __reduce__(self):
        return (os._exit, (9,))


def test_a_dead_decode_worker_saves_a_checkpoint_and_resume_loses_nothing(photos, whole, tmp_path):
    out = tmp_path / "vocab"
    poisoned = [*photos[:5], KillsItsWorker(), *photos[6:]]
    with pytest.raises(WorkerDiedError, match=r"decoding worker process died on rank 0.*--resume") as info:
        build_vocabulary(poisoned, out=out, num_workers=1, **SMALL)
    assert f"checkpoint saved at {checkpoint_path(out)}" in str(info.value)
    done = load_checkpoint(checkpoint_path(out))[1]["stats"]["num_images"]
    assert done in (2, 4)  # the chunks before the poisoned one that came back before the pool broke
    resumed = build_vocabulary(photos, out=out, resume=True, **SMALL)  # decoded inline: the same words
    assert torch.equal(resumed.centroids, whole) and resumed.config.num_images == 8
