"""What a build's checkpoint holds: its settings, its source, the stream position, the counts and the k-means state.

:mod:`vwt.vocab.checkpoint` is the file (safetensors arrays + JSON state); this module is its content for
:func:`vwt.vocab.build.build_vocabulary`: what a checkpoint must agree on to be resumed, how the build saves
and restores itself, and the complete check of a checkpoint before any of it is used (:func:`check_state`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..config import VocabularyConfig
from .checkpoint import CheckpointError, Header, load_checkpoint, save_checkpoint
from .data import describe_source, is_dataset_id
from .kmeans import KMEANS_SCALARS, KMeansStream

__all__ = ["COUNT_FIELDS", "BuildShape", "build_settings", "check_state", "restore_build", "save_build"]

logger = logging.getLogger(__name__)

COUNT_FIELDS = ("num_images", "num_patches", "num_skipped")
"""The build's counts a checkpoint records (the fields of :class:`vwt.vocab.build.BuildStats` that sum over ranks)."""
_STATE_KEYS = {"format", "settings", "source", "rounds", "stats", "kmeans"}
_MT19937_KEYS = 624


def build_settings(data: Any, split: str, k: int, patch_size: int, patches_per_image: int | None, batch_size: int,
                   max_images: int | None, seed: int, images_per_chunk: int, world_size: int, pre: Any
                   ) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed by this build (JSON-serialisable)."""
    return {
        "data": describe_source(data), "split": split if is_dataset_id(data) else None, "k": k,
        "patch_size": patch_size, "patches_per_image": patches_per_image, "batch_size": batch_size,
        "max_images": max_images, "seed": seed, "images_per_chunk": images_per_chunk, "world_size": world_size,
        "preprocess": VocabularyConfig(k=1, patch_size=1, num_channels=len(pre.image_mean), preprocess=pre
                                       ).to_dict()["preprocess"],
    }


@dataclass(frozen=True)
class BuildShape:
    """What the numbers in a checkpoint of this build must fit."""

    k: int
    # Values per patch (C * p * p).
    dim: int
    batch_size: int
    # Patches each image gives (min(patches_per_image, patches in the grid)).
    patches_per_image: int
    # Most images one round can consume (images_per_chunk * world_size).
    images_per_round: int
    max_images: int | None = None


class _Field:
    """Raises :class:`CheckpointError` naming the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field: str, problem: str) -> NoReturn:
        raise CheckpointError(f"{self.path}: {field}: {problem}")

    def mapping(self, value: Any, field: str, keys: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, f"expected an object, found {type(value).__name__}")
        if set(value) != keys:
            missing, unknown = sorted(keys - set(value)), sorted(set(value) - keys)
            self.fail(field, "; ".join([f"missing {', '.join(missing)}"] * bool(missing) +
                                       [f"unknown {', '.join(map(repr, unknown))}"] * bool(unknown)))
        return value

    def integer(self, value: Any, field: str, low: int = 0, high: float = math.inf) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"expected an integer, found {type(value).__name__} {value!r}")
        if not low <= value <= high:
            self.fail(field, f"{value} is outside [{low}, {high}]")
        return value


def _check_header(field: _Field, header: Header, fitted: bool, buffered_max: int, shape: BuildShape) -> None:
    expected = {"buffer": ("F32", None)}
    if fitted:
        expected |= {"cluster_centers": ("F32", (shape.k, shape.dim)), "counts": ("F32", (shape.k,)),
                     "random_state_keys": ("U32", (_MT19937_KEYS,))}
    for name in sorted(set(header) - set(expected)):
        field.fail(name, f"unexpected array in a checkpoint with fitted={fitted}")
    for name, (dtype, dims) in expected.items():
        if name not in header:
            if name != "buffer":
                field.fail(name, "missing")
            continue
        found_dtype, found = header[name]
        if found_dtype != dtype:
            field.fail(name, f"dtype {found_dtype}, expected {dtype}")
        if name == "buffer":
            if len(found) != 2 or found[1] != shape.dim or not 0 < found[0] < buffered_max:
                field.fail(name, f"shape {list(found)}, expected [n, {shape.dim}] with 0 < n < {buffered_max} "
                                 "(patches waiting for the next batch)")
        elif found != dims:
            field.fail(name, f"shape {list(found)}, expected {list(dims)}")


def _check_kmeans(field: _Field, kmeans: dict[str, Any], fitted_patches: int, shape: BuildShape) -> None:
    scalars = field.mapping(kmeans["scalars"], "kmeans.scalars", set(KMEANS_SCALARS))
    k, bs = shape.k, shape.batch_size
    first = max(bs, k)  # the first partial_fit gets every buffered patch, at least this many
    steps = field.integer(scalars["n_steps_"], "kmeans.scalars.n_steps_", 1)
    low, high = first + (steps - 1) * bs, first + shape.images_per_round * shape.patches_per_image + (steps - 1) * bs
    if not low <= fitted_patches < high:
        field.fail("kmeans.scalars.n_steps_", f"{steps} steps of k-means do not fit the {fitted_patches} patches "
                                              "fitted (stats.num_patches less the buffer)")
    field.integer(scalars["_n_since_last_reassign"], "kmeans.scalars._n_since_last_reassign", 0, 10 * k - 1)
    field.integer(scalars["_batch_size"], "kmeans.scalars._batch_size", bs, bs)
    field.integer(scalars["_init_size"], "kmeans.scalars._init_size", 1, max(3 * bs, 3 * k))
    field.integer(scalars["_n_init"], "kmeans.scalars._n_init", 1, 1)
    field.integer(scalars["n_features_in_"], "kmeans.scalars.n_features_in_", shape.dim, shape.dim)
    field.integer(scalars["_n_features_out"], "kmeans.scalars._n_features_out", k, k)
    tol = scalars["_tol"]
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < math.inf:
        field.fail("kmeans.scalars._tol", f"expected a finite non-negative number, found {tol!r}")
    rng = field.mapping(kmeans["random_state"], "kmeans.random_state", {"name", "pos", "has_gauss", "cached_gaussian"})
    if rng["name"] != "MT19937":
        field.fail("kmeans.random_state.name", f"{rng['name']!r}, expected 'MT19937'")
    field.integer(rng["pos"], "kmeans.random_state.pos", 0, _MT19937_KEYS)
    field.integer(rng["has_gauss"], "kmeans.random_state.has_gauss", 0, 1)
    cached = rng["cached_gaussian"]
    if isinstance(cached, bool) or not isinstance(cached, (int, float)) or not math.isfinite(cached):
        field.fail("kmeans.random_state.cached_gaussian", f"expected a finite number, found {cached!r}")


def check_state(path: Path, header: Header, state: dict[str, Any], settings: dict[str, Any],
                source: dict[str, Any] | None, shape: BuildShape) -> None:
    """Refuse (:class:`CheckpointError`) a checkpoint that this build cannot continue, before any array is read.

    Checks the settings and the source against this build's, every count's type and range, the counts
    against each other and the stream (``rounds``), the k-means scalars against the settings (only the known
    ones), and every array's dtype and shape (from the header). Values inside the arrays are checked by
    :func:`restore_build` once read.
    """
    field = _Field(path)
    field.mapping(state, "state", _STATE_KEYS)
    theirs = state["settings"] if isinstance(state["settings"], dict) else {}
    if theirs != settings:
        differ = sorted(key for key in {*settings, *theirs} if settings.get(key) != theirs.get(key))
        raise CheckpointError(f"{path} belongs to a build with other settings ({', '.join(differ)} differ); "
                              "rerun that build, or delete the checkpoint to start over")
    if state["source"] != source:
        then = state["source"] if isinstance(state["source"], dict) else {}
        now = source or {}
        counts = f" ({then.get('files')} files then, {now.get('files')} now)" if "files" in then else ""
        field.fail("source", f"the images of {settings['data']!r} changed since this checkpoint was written{counts}, "
                             "so resuming would mix two streams; to start afresh, delete the checkpoint and run "
                             "again without --resume")
    stats = field.mapping(state["stats"], "stats", set(COUNT_FIELDS))
    images, patches, skipped = (field.integer(stats[key], f"stats.{key}") for key in COUNT_FIELDS)
    if patches != images * shape.patches_per_image:
        field.fail("stats.num_patches", f"{patches} patches from {images} images, but each image gives "
                                        f"{shape.patches_per_image}")
    seen = images + skipped
    rounds = field.integer(state["rounds"], "rounds", int(seen > 0), seen)  # a round reads at least one image
    if seen > rounds * shape.images_per_round:
        field.fail("rounds", f"{rounds} rounds of at most {shape.images_per_round} images cannot have read {seen}")
    limit = min(shape.max_images or math.inf, (source or {}).get("files", math.inf))
    if seen > limit:
        field.fail("stats", f"{seen} images read, but the source has {limit}")
    kmeans = state["kmeans"]
    fitted = isinstance(kmeans, dict) and kmeans.get("fitted")
    if not isinstance(fitted, bool):
        field.fail("kmeans.fitted", f"expected true or false, found {fitted!r}")
    field.mapping(kmeans, "kmeans", {"fitted", "scalars", "random_state"} if fitted else {"fitted"})
    buffered = header["buffer"][1][0] if "buffer" in header and len(header["buffer"][1]) == 2 else 0
    _check_header(field, header, fitted, shape.batch_size if fitted else max(shape.batch_size, shape.k), shape)
    if not fitted and buffered != patches:
        field.fail("buffer", f"{buffered} patches waiting, but k-means has not started: all {patches} should be")
    if fitted:
        _check_kmeans(field, kmeans, patches - buffered, shape)


def _check_arrays(field: _Field, arrays: dict[str, Any], fitted_patches: int) -> None:
    import numpy as np

    for name in ("buffer", "cluster_centers", "counts"):
        if name in arrays and not np.isfinite(arrays[name]).all():
            field.fail(name, "NaN or infinite values")
    if "counts" in arrays and not ((arrays["counts"] >= 0) & (arrays["counts"] <= fitted_patches)).all():
        field.fail("counts", f"a count outside [0, {fitted_patches}] (the patches fitted)")


def restore_build(path: Path, settings: dict[str, Any], source: dict[str, Any] | None, shape: BuildShape,
                  kmeans: KMeansStream) -> tuple[int, dict[str, int]]:
    """Check a checkpoint completely, then load it into ``kmeans``; return ``(rounds already done, counts)``."""
    arrays, state = load_checkpoint(path, lambda header, state: check_state(path, header, state, settings, source,
                                                                             shape))
    buffered = len(arrays["buffer"]) if "buffer" in arrays else 0
    _check_arrays(_Field(path), arrays, state["stats"]["num_patches"] - buffered)
    kmeans.load_state(arrays, state["kmeans"])
    counts = {key: state["stats"][key] for key in COUNT_FIELDS}
    logger.info("resuming from %s: %d images done", path, counts["num_images"])
    return state["rounds"], counts


def save_build(path: Path, settings: dict[str, Any], source: dict[str, Any] | None, kmeans: KMeansStream,
               counts: dict[str, int], rounds: int) -> None:
    """Save the build's state after ``rounds`` rounds of the stream."""
    arrays, kmeans_state = kmeans.state()
    save_checkpoint(path, arrays, {"settings": settings, "source": source, "rounds": rounds, "stats": counts,
                                   "kmeans": kmeans_state})
    logger.info("checkpoint: %s (%d images)", path, counts["num_images"])
