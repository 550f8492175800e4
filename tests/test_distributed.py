"""A build under ``torchrun`` on CPU (gloo) learns exactly the words of a single-process build."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vwt import VisualVocabulary

pytest.importorskip("torch.distributed.run")


@pytest.fixture()
def jpeg_folder(tmp_path, sample_photos):
    folder = tmp_path / "jpegs"
    folder.mkdir()
    for name, image in sample_photos[:6]:
        Image.fromarray(np.asarray(image)).convert("RGB").save(folder / f"{name.split('/')[-1]}.jpg", quality=90)
    return folder


def test_torchrun_with_two_processes_learns_the_words_of_one_process(jpeg_folder, tmp_path):
    # 6 images in chunks of 2: rank 0 decodes chunks 0 and 2, rank 1 chunk 1 (and runs out first).
    args = ["--data", str(jpeg_folder), "--k", "8", "--patches-per-image", "48", "--batch-size", "100",
            "--images-per-chunk", "2", "--num-workers", "0", "--seed", "1", "--no-progress"]
    # One thread everywhere (torchrun's own default with several processes): k-means++ and the BLAS
    # calls of k-means then run the same code paths in both builds, which compare bit for bit below.
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    single = subprocess.run([sys.executable, "-m", "vwt.cli.build_vocab", *args, "--out", str(tmp_path / "one")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "vwt.cli.build_vocab"]
    multi = subprocess.run([*run, *args, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                           timeout=600)
    assert multi.returncode == 0, multi.stderr
    assert multi.stdout.count("wrote") == 1  # rank 0 writes and reports
    one = VisualVocabulary.from_pretrained(tmp_path / "one")
    two = VisualVocabulary.from_pretrained(tmp_path / "two")
    assert two.config.num_images == one.config.num_images == 6
    assert two.config.num_patches == one.config.num_patches == 6 * 48
    assert torch.equal(two.centroids, one.centroids)
