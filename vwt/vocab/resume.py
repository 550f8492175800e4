"""What a build's checkpoint holds: its settings, the stream position, the counts and the k-means state.

:mod:`vwt.vocab.checkpoint` is the file (safetensors arrays + JSON state); this module is its content for
:func:`vwt.vocab.build.build_vocabulary`: what a checkpoint must agree on to be resumed, and how the build
saves and restores itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import VocabularyConfig
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import describe_source, is_dataset_id
from .kmeans import KMeansStream

__all__ = ["COUNT_FIELDS", "build_settings", "restore_build", "save_build"]

logger = logging.getLogger(__name__)

# The build's counts a checkpoint records (the fields of :class:`vwt.vocab.build.BuildStats` that sum over ranks).
COUNT_FIELDS = ("num_images", "num_patches", "num_skipped")


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


def restore_build(path: Path, settings: dict[str, Any], kmeans: KMeansStream) -> tuple[int, dict[str, int]]:
    """Load a checkpoint into ``kmeans``; return ``(rounds already done, counts)``."""
    arrays, state = load_checkpoint(path)
    if state.get("settings") != settings:
        theirs = state.get("settings") or {}
        differ = sorted(key for key in {*settings, *theirs} if settings.get(key) != theirs.get(key))
        raise CheckpointError(f"{path} belongs to a build with other settings ({', '.join(differ)} differ); "
                              "rerun that build, or delete the checkpoint to start over")
    kmeans.load_state(arrays, state["kmeans"])
    counts = {key: state["stats"][key] for key in COUNT_FIELDS}
    logger.info("resuming from %s: %d images done", path, counts["num_images"])
    return int(state["rounds"]), counts


def save_build(path: Path, settings: dict[str, Any], kmeans: KMeansStream, counts: dict[str, int],
               rounds: int) -> None:
    """Save the build's state after ``rounds`` rounds of the stream."""
    arrays, kmeans_state = kmeans.state()
    save_checkpoint(path, arrays, {"settings": settings, "rounds": rounds, "stats": counts, "kmeans": kmeans_state})
    logger.info("checkpoint: %s (%d images)", path, counts["num_images"])
