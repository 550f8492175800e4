"""Command-line arguments: bad ones are usage errors before any data is read; logs printed once."""

import subprocess
import sys

import pytest

from vwt import build_vocabulary
from vwt.cli.build_vocab import main as build_vocab_main


@pytest.mark.parametrize("seed", ["-1", str(10**20), "1.5"])
def test_a_seed_out_of_range_is_a_usage_error_naming_seed_before_any_data_is_read(seed, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # the data folder does not exist: it is never looked at
        build_vocab_main(["--data", str(tmp_path / "missing"), "--k", "4", "--seed", seed])
    assert exit_info.value.code == 2
    assert "argument --seed" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [-1, 10**20])
def test_build_vocabulary_refuses_a_seed_out_of_range_before_reading_the_stream(seed):
    read = []

    def stream():
        read.append(True)
        yield from []

    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\)"):
        build_vocabulary(stream(), k=4, seed=seed, progress=False)
    assert read == []


def test_a_mistyped_data_folder_fails_fast_with_no_such_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "img").mkdir()
    assert build_vocab_main(["--data", "img/typo_folder", "--k", "4", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no such folder: img/typo_folder" in err and "Traceback" not in err


def test_hub_library_warnings_are_printed_once_by_the_cli_logging_setup():
    code = ("from vwt.cli import configure_logging; configure_logging(False); import logging; "
            "logging.getLogger('huggingface_hub.utils._http').warning('retrying in 1s [Retry 1/5]')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.count("retrying in 1s") == 1, result.stderr
