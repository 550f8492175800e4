"""Resumable builds: the checkpoint file (safetensors arrays + JSON state, no pickle).

A checkpoint is one ``safetensors`` file written atomically beside the output directory
(``<out>.checkpoint.safetensors``): the arrays (centroids, counts, the random generator's key, the
patches waiting for the next ``partial_fit``) are its tensors and everything else (the build's settings,
the stream position, the counts, the k-means scalars) is JSON in its metadata, under ``"vwt_checkpoint"``::

    from safetensors import safe_open
    json.loads(safe_open(path, "np").metadata()["vwt_checkpoint"])

Reading is defensive: only a regular file is opened (a named pipe never blocks), the JSON is bounded in
size and depth, and a caller's ``check`` sees every array's name, dtype and shape (from the header) and the
JSON before any array is read. Every problem is a :class:`CheckpointError` that names the file and the field.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CHECKPOINT_SUFFIX", "MAX_STATE_BYTES", "CheckpointError", "checkpoint_path", "load_checkpoint",
           "save_checkpoint"]

CHECKPOINT_SUFFIX = ".checkpoint.safetensors"
"""A build's checkpoint is ``OUT`` with this suffix, beside ``OUT``."""
MAX_STATE_BYTES = 2**20
"""The most bytes of JSON state a checkpoint may hold (a build's state is a few kB)."""

_KEY = "vwt_checkpoint"
_FORMAT = 1
_MAX_DEPTH = 16

Header = dict[str, tuple[str, tuple[int, ...]]]
"""A checkpoint's arrays as its header describes them: name -> (safetensors dtype such as ``"F32"``, shape)."""


class CheckpointError(ValueError):
    """A checkpoint that is unreadable, inconsistent or belongs to a different build (the message names the
    file and the field)."""


def checkpoint_path(out: str | os.PathLike) -> Path:
    """Where the checkpoint of a build writing ``out`` lives: beside it, ``<out>.checkpoint.safetensors``."""
    out = Path(out)
    return out.with_name(out.name + CHECKPOINT_SUFFIX)


def save_checkpoint(path: str | os.PathLike, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
    """Write the checkpoint atomically: into a temporary directory beside it, then a rename.

    The directory is named ``.<out>.tmp-XXXXXXXX`` (``out`` being the build's output directory), the name
    that :func:`vwt.io.atomic_directory` and :func:`vwt.io.check_output` remove under the output lock, so
    what a killed build leaves (safetensors' own ``.tmpXXXXXX`` included) is removed by the next build.
    """
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out_name = path.name.removesuffix(CHECKPOINT_SUFFIX)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_name}.tmp-", dir=path.parent))
    try:
        metadata = {_KEY: json.dumps({"format": _FORMAT, **state}, sort_keys=True)}
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, tmp / path.name, metadata=metadata)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [v for item in level if isinstance(item, (dict, list))
                 for v in (item.values() if isinstance(item, dict) else item)]
        if depth > _MAX_DEPTH:
            break
    return depth


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_state(path: str | os.PathLike, metadata: dict[str, str]) -> dict[str, Any]:
    text = metadata.get(_KEY)
    if text is None:
        raise CheckpointError(f"{path}: not a vwt build checkpoint (no {_KEY!r} metadata)")
    if len(text) > MAX_STATE_BYTES:
        raise CheckpointError(f"{path}: {_KEY}: {len(text)} bytes of state, over the {MAX_STATE_BYTES}-byte limit")
    try:
        state = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise CheckpointError(f"{path}: {_KEY}: state nested too deeply") from None
    except ValueError as err:
        raise CheckpointError(f"{path}: {_KEY}: not valid JSON ({err})") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: {_KEY}: expected a JSON object, found {type(state).__name__}")
    if _depth(state) > _MAX_DEPTH:
        raise CheckpointError(f"{path}: {_KEY}: state nested more than {_MAX_DEPTH} levels deep")
    if state.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: format: unsupported checkpoint format {state.get('format')!r}")
    return state


def load_checkpoint(
    path: str | os.PathLike, check: Callable[[Header, dict[str, Any]], None] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, state)`` of a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file; anything but a regular file (or a symlink to one) is refused unopened.
        check: called with the arrays' header (:data:`Header`) and the state before any array is read;
            raises :class:`CheckpointError` to refuse the checkpoint.
    """
    from safetensors import SafetensorError, safe_open

    try:  # O_NONBLOCK: a named pipe must not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot open it ({err.strerror})") from err
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path}: not a regular file; refusing to read it")
    try:
        with safe_open(str(path), "np") as f:
            state = _parse_state(path, f.metadata() or {})
            header = {name: (f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape())) for name in f.keys()}  # noqa: SIM118
            if check is not None:
                check(header, state)
            arrays = {name: f.get_tensor(name) for name in header}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from err
    return arrays, state
