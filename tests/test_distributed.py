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


RANKS_SCRIPT = '''
import os, sys, time
import torch.distributed as dist
from vwt import build_vocabulary
from vwt.cli.build_vocab import main
from vwt.vocab.data import iter_images
from vwt.vocab.distributed import DistributedError

rank = int(os.environ["RANK"])
folder, out = sys.argv[1], sys.argv[2]
small = ["--data", folder, "--k", "4", "--patches-per-image", "16", "--images-per-chunk", "1", "--num-workers", "0",
         "--no-progress"]
dist.init_process_group("gloo")  # one group for the three cases; each build makes its own, with its timeout

# 1. ranks given different settings: every rank fails at start, naming them
rc = main([*small, "--out", out + "-mixed", "--seed", str(rank), "--k", str(4 + rank)])
print(f"case 1 rank {rank} rc={rc}", flush=True)

# 2. --push-to-hub: rank 0 alone pushes
pushes = []
rc = main([*small, "--out", out, "--push-to-hub", "me/words"], push=lambda vocab, repo: pushes.append(repo) or "URL")
print(f"case 2 rank {rank} rc={rc} pushes={pushes}", flush=True)

# 3. rank 1 stalls (as under SIGSTOP) while reading its first image: rank 0 gives up after the timeout
def stalling():
    for i, record in enumerate(iter_images(folder)):
        if rank == 1 and i == 1:
            time.sleep(600)
        yield record

try:
    build_vocabulary(stalling(), 4, patches_per_image=16, images_per_chunk=1, progress=False, dist_timeout=3)
except DistributedError as err:
    print(f"case 3 rank {rank}: {err}", flush=True)
    sys.exit(3)
'''


def test_torchrun_ranks_with_different_settings_fail_together_push_from_rank_0_and_stop_when_one_stalls(
        jpeg_folder, tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(script), str(jpeg_folder), str(tmp_path / "vocab")],
                         env=env, capture_output=True, text=True, timeout=300)
    text = run.stdout + run.stderr
    # 1. Both ranks refuse, naming what differs, and nothing is written.
    assert "case 1 rank 0 rc=1" in text and "case 1 rank 1 rc=1" in text, text
    assert text.count("the torchrun ranks were given different settings: k, seed differ") == 2
    assert not (tmp_path / "vocab-mixed").exists()
    # 2. One vocabulary, one push, from rank 0.
    assert "case 2 rank 0 rc=0 pushes=['me/words']" in text and "case 2 rank 1 rc=0 pushes=[]" in text, text
    assert text.count("pushed to URL") == 1 and (tmp_path / "vocab" / "config.json").exists()
    # 3. Rank 0 stops with a clear error instead of waiting 30 minutes; torchrun then ends the stalled rank.
    assert "case 3 rank 0: rank 0: gathering a round of patches failed: another torchrun rank stalled" in text, text
    assert "--dist-timeout 3 s" in text and run.returncode != 0
