"""Resumable builds: the checkpoint file (safetensors arrays + JSON state, no pickle).

A checkpoint is one ``safetensors`` file written atomically beside the output directory
(``<out>.checkpoint.safetensors``): the arrays (centroids, counts, the random generator's key, the
patches waiting for the next ``partial_fit``) are its tensors and everything else (the build's settings,
the stream position, the counts, the k-means scalars) is JSON in its metadata, under ``"vwt_checkpoint"``::

    from safetensors import safe_open
    json.loads(safe_open(path, "np").metadata()["vwt_checkpoint"])
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CHECKPOINT_SUFFIX", "CheckpointError", "checkpoint_path", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_SUFFIX = ".checkpoint.safetensors"
_KEY = "vwt_checkpoint"
_FORMAT = 1
class CheckpointError(ValueError):
    """A checkpoint that is unreadable or belongs to a different build."""


def checkpoint_path(out: str | os.PathLike) -> Path:
    """Where the checkpoint of a build writing ``out`` lives: beside it, ``<out>.checkpoint.safetensors``."""
    out = Path(out)
    return out.with_name(out.name + CHECKPOINT_SUFFIX)


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
    """Write the checkpoint atomically (a temporary file beside it, then a rename)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        metadata = {_KEY: json.dumps({"format": _FORMAT, **state}, sort_keys=True)}
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, state)`` of a checkpoint written by :func:`save_checkpoint`."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            metadata = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}
        state = json.loads(metadata[_KEY])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: not a vwt build checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {state.get('format') if isinstance(state, dict) else state!r}")
    return arrays, state
