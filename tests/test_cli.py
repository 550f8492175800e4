import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vwt import VisualVocabulary
from vwt.cli.build_vocab import main as build_vocab_main


@pytest.fixture()
def photo_folder(tmp_path, sample_photos):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for name, image in sample_photos[:3]:
        Image.fromarray(np.asarray(image)).convert("RGB").save(folder / f"{name.split('/')[-1]}.jpg")
    gray = dict(sample_photos)["skimage/camera"]
    assert gray.ndim == 2
    Image.fromarray(gray).save(folder / "nested" / "camera_gray.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_cli_builds_from_a_folder_skipping_and_counting_the_corrupt_file(photo_folder, tmp_path, capsys):
    out = tmp_path / "vocab"
    argv = ["--data", str(photo_folder), "--k", "8", "--out", str(out), "--seed", "3", "--no-progress"]
    assert build_vocab_main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    vocab = VisualVocabulary.from_pretrained(out)
    assert vocab.config.num_images == 4  # three photos + the grayscale one
    assert vocab.config.num_skipped == 1  # broken.jpg
    assert vocab.config.num_patches == 4 * 196
    assert vocab.config.command.startswith("vwt-build-vocab --data")
    card = (out / "README.md").read_text()
    assert "vwt-build-vocab --data" in card and "--k 8" in card
    assert json.loads((out / "config.json").read_text())["k"] == 8


def test_cli_refuses_an_existing_output_without_overwrite(photo_folder, tmp_path, capsys):
    out = tmp_path / "vocab"
    out.mkdir()
    assert build_vocab_main(["--data", str(photo_folder), "--k", "4", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0] and "Traceback" not in err[0]


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_vocab_main(["--data", "sample", "--k", "zero"])
    assert exit_info.value.code == 2


def test_console_script_help_documents_every_flag():
    result = subprocess.run([sys.executable, "-m", "vwt.cli.build_vocab", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--data", "--k", "--split", "--out", "--patch-size", "--image-processor", "--patches-per-image",
                 "--batch-size", "--max-images", "--seed", "--push-to-hub", "--overwrite", "--verbose"):
        assert flag in result.stdout


# The heavy libraries are what make an import slow (torch, transformers, sklearn: seconds); asserting
# that they are not imported is the machine-independent form of "import vwt and --help are instant".
_HEAVY = ("torch", "transformers", "sklearn", "datasets", "matplotlib", "torchvision", "timm", "open_clip")
_NOT_LOADED = f"import sys; loaded = [m for m in {_HEAVY!r} if m in sys.modules]; assert not loaded, loaded"


def test_importing_vwt_loads_no_heavy_library_until_a_name_is_used():
    # The lazy stage packages too: the API reference's build imports them to read their __all__.
    code = (f"import vwt, vwt.bench, vwt.cli, vwt.vocab, vwt.tokenize, vwt.methods, vwt.viz; {_NOT_LOADED}; "
            "vwt.VisualWordTokenizer; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("command", ["build_vocab", "convert_vocab", "viz", "bench"])
def test_every_command_prints_its_help_without_loading_a_heavy_library(command):
    code = (f"import sys; sys.argv = ['x', '--help']\nfrom vwt.cli.{command} import main\n"
            f"try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0\n{_NOT_LOADED}")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
