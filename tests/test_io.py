"""Output directories: bounded JSON reads, one writer at a time, nothing lost, nothing half-written."""

import multiprocessing
import os
import signal

import numpy as np
import pytest
import torch

from vwt import VisualVocabulary, build_vocabulary
from vwt.io import (
    BadFileError,
    OutputBusyError,
    atomic_directory,
    check_output,
    read_json,
)
from vwt.vocab.vocabulary import VOCABULARY_CONTENTS


@pytest.fixture(scope="module")
def photos(sample_photos):
    return [image for _, image in sample_photos[:2]]


def _build(photos, out, **kwargs):
    return build_vocabulary(photos, k=4, out=out, progress=False, **kwargs)


def _vocab_files(directory):
    (directory / "config.json").write_text("{}")
    (directory / "vocab.safetensors").write_bytes(b"")


def _fork(target, *args):
    """Run ``target(*args)`` in a forked child (only os/io calls: safe to fork a torch process) and wait."""
    process = multiprocessing.get_context("fork").Process(target=target, args=args)
    process.start()
    process.join(60)
    return process.exitcode


# --- bounded JSON reads -------------------------------------------------------------------------------


def test_a_json_file_symlinked_to_dev_zero_is_refused_without_reading_it(tmp_path):
    (tmp_path / "config.json").symlink_to("/dev/zero")
    with pytest.raises(BadFileError, match=r"config\.json: is a character device, not a regular file"):
        read_json(tmp_path / "config.json")


def test_a_json_file_that_is_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "config.json")
    with pytest.raises(BadFileError, match="named pipe"):
        read_json(tmp_path / "config.json")


def test_a_json_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "config.json"
    with open(path, "wb") as fh:
        fh.truncate(5 * 2**20)  # sparse: 5 MiB of size, no data written
    with pytest.raises(BadFileError, match=r"config\.json: 5242880 bytes, over the 4194304-byte limit"):
        read_json(path)
    path.write_text('{"a": 1}')
    with pytest.raises(BadFileError, match="over the 4-byte limit"):
        read_json(path, max_bytes=4)


@pytest.mark.parametrize(("content", "message"), [
    (b"\x89PNG\r\n\x1a\n\x00\xff", "not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"k": 3,', r"not valid JSON: Expecting property name.*line 1"),
    (b'{"threshold": NaN}', "NaN is not valid JSON"),
], ids=["binary", "nested-100k-deep", "truncated", "nan"])
def test_a_json_file_that_is_binary_deeply_nested_truncated_or_nan_is_an_error_naming_it(tmp_path, content, message):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(BadFileError, match=rf"config\.json: .*{message}"):
        read_json(tmp_path / "config.json")


def test_a_json_file_reached_through_a_symlink_to_a_regular_file_is_read_like_the_hub_cache_does(tmp_path):
    (tmp_path / "blob").write_text('{"k": 3}')
    (tmp_path / "config.json").symlink_to(tmp_path / "blob")
    assert read_json(tmp_path / "config.json") == {"k": 3}


# --- one writer at a time -----------------------------------------------------------------------------


def test_two_builds_of_the_same_out_without_overwrite_one_wins_and_the_other_fails_clearly(photos, tmp_path):
    """The race of the issue, made deterministic: build B passes its early check, then build A runs and
    writes ``out`` completely while B is still reading its images; B must then fail, not replace A."""
    out = tmp_path / "vocab"
    first = {}

    def stream_of_b():
        yield from photos
        first["vocab"] = _build(photos, out, seed=1)  # A, start to finish, while B is streaming

    with pytest.raises(FileExistsError, match="vocab exists"):
        _build(stream_of_b(), out, seed=2)
    assert torch.equal(VisualVocabulary.from_pretrained(out).centroids, first["vocab"].centroids)
    assert VisualVocabulary.from_pretrained(out).config.seed == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab"]


def test_a_build_whose_out_is_being_written_by_another_fails_at_once_without_reading_data(photos, tmp_path):
    out = tmp_path / "vocab"
    read = []

    def stream():
        read.append(True)
        yield from photos

    with atomic_directory(out, contents=VOCABULARY_CONTENTS) as tmp:  # another writer, mid-write
        (tmp / "marker").write_text("a")
        with pytest.raises(OutputBusyError, match=r"vocab is being written by another process"):
            _build(stream(), out)
    assert read == [] and (out / "marker").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab"]  # lock file and temporary dir gone


def _write_after_barrier(out, barrier, results):
    """Both processes start writing together; the one that gets in holds its write open until the other
    has tried, so the other always meets a writer mid-write. Any outcome is reported, so the test never hangs."""
    try:
        barrier.wait(30)
        try:
            with atomic_directory(out) as tmp:
                (tmp / "pid").write_text(str(os.getpid()))
                barrier.wait(30)
            results.put(("ok", os.getpid()))
        except (OutputBusyError, FileExistsError) as err:
            barrier.wait(30)  # let the writer finish
            results.put((type(err).__name__, os.getpid()))
    except BaseException as err:  # noqa: BLE001 - reported to the test, which fails on it
        results.put(("crash", repr(err)))


def test_two_processes_writing_the_same_out_at_once_exactly_one_wins(tmp_path):
    out = tmp_path / "out"
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    processes = [context.Process(target=_write_after_barrier, args=(out, barrier, results)) for _ in range(2)]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(60)
    assert [o[0] for o in outcomes].count("ok") == 1, outcomes
    loser = next(o for o in outcomes if o[0] != "ok")
    assert loser[0] in ("OutputBusyError", "FileExistsError")
    winner = next(o for o in outcomes if o[0] == "ok")
    assert (out / "pid").read_text() == str(winner[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- --overwrite replaces only a vocabulary --------------------------------------------------------------


def test_overwrite_onto_a_directory_that_is_not_a_vocabulary_keeps_its_files_and_fails_before_reading_data(
        photos, tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("years of work")
    read = []

    def stream():
        read.append(True)
        yield from photos

    with pytest.raises(FileExistsError, match=r"thesis is not a vocabulary \(it lacks config\.json.*holds chapter1\.tex"):
        _build(stream(), out, overwrite=True)
    assert read == [] and (out / "chapter1.tex").read_text() == "years of work"


def test_overwrite_onto_a_vocabulary_with_a_foreign_file_keeps_it(photos, tmp_path):
    out = tmp_path / "vocab"
    _build(photos, out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds notes.txt"):
        _build(photos, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_an_empty_directory_and_a_vocabulary(photos, tmp_path):
    out = tmp_path / "vocab"
    out.mkdir()
    first = _build(photos, out, overwrite=True, seed=1)
    second = _build(photos, out, overwrite=True, seed=2)
    assert torch.equal(VisualVocabulary.from_pretrained(out).centroids, second.centroids)
    assert not torch.equal(first.centroids, second.centroids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab"]


def test_overwrite_onto_a_file_is_refused(photos, tmp_path):
    (tmp_path / "vocab").write_text("a file")
    with pytest.raises(FileExistsError, match="not a directory"):
        _build(photos, tmp_path / "vocab", overwrite=True)
    assert (tmp_path / "vocab").read_text() == "a file"


# --- what a killed writer leaves behind ------------------------------------------------------------------


def _overwrite_killed_between_renames(out):
    calls = []
    real_replace = os.replace

    def replace(src, dst):  # only in this forked child: die right after the first rename
        calls.append(src)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    os.replace = replace
    with atomic_directory(out, overwrite=True, contents=VOCABULARY_CONTENTS) as tmp:
        _vocab_files(tmp)
        (tmp / "README.md").write_text("new")


def test_a_sigkill_between_the_two_renames_of_overwrite_is_recovered_by_the_next_build(photos, tmp_path):
    out = tmp_path / "vocab"
    old = _build(photos, out, seed=1)
    assert _fork(_overwrite_killed_between_renames, out) == -signal.SIGKILL
    assert not out.exists()  # the state the issue found: out missing, the old copy parked in .vocab.old-*
    assert any(p.name.startswith(".vocab.old-") for p in tmp_path.iterdir())
    with pytest.raises(FileExistsError, match="exists"):  # the next build restores it first, then refuses
        _build(photos, out, seed=2)
    assert torch.equal(VisualVocabulary.from_pretrained(out).centroids, old.centroids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab"]


def _killed_after_writing(out):
    with atomic_directory(out) as tmp:
        _vocab_files(tmp)
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_sigkill_after_the_files_are_written_leaves_tmp_directories_that_the_next_build_removes(photos, tmp_path):
    out = tmp_path / "vocab"
    assert _fork(_killed_after_writing, out) == -signal.SIGKILL
    assert not out.exists() and any(p.name.startswith(".vocab.tmp-") for p in tmp_path.iterdir())
    _build(photos, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab"]


def test_leftovers_of_other_outputs_with_similar_names_are_not_touched(tmp_path):
    other = tmp_path / ".vocab.tmp-b.tmp-abcd1234"  # the temporary directory of an output named "vocab.tmp-b"
    other.mkdir()
    check_output(tmp_path / "vocab")
    assert other.is_dir()


def test_a_build_that_fails_leaves_neither_lock_nor_temporary_directory(tmp_path):
    with pytest.raises(ValueError, match="not enough patches"):
        build_vocabulary([np.zeros((32, 32, 3), np.uint8)], k=500, out=tmp_path / "vocab", progress=False)
    assert list(tmp_path.iterdir()) == []
