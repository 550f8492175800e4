"""Finding a vocabulary that fits a model (patch size and normalization), or building one on the fly."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..config import ConfigError, PreprocessConfig
from ..preprocess import preprocess_config
from ..vocab.build import build_vocabulary
from ..vocab.data import sample_images
from .models import BenchModel

__all__ = ["vocabulary_roots", "matching_vocabularies", "resolve_vocabulary"]

logger = logging.getLogger(__name__)


def vocabulary_roots() -> list[Path]:
    """Where shipped vocabularies are looked for: ``./vocabularies``, then the source tree's ``vocabularies/``."""
    roots = [Path.cwd() / "vocabularies", Path(__file__).resolve().parents[2] / "vocabularies"]
    unique: list[Path] = []
    for root in roots:
        if root.is_dir() and root.resolve() not in [r.resolve() for r in unique]:
            unique.append(root)
    return unique


def _fits(config: dict[str, Any], bench: BenchModel) -> bool:
    try:
        vocab_pre = PreprocessConfig.from_dict(config.get("preprocess"))
    except ConfigError:
        return False
    return config.get("patch_size") == bench.patch_size and vocab_pre.same_normalization(
        preprocess_config(bench.image_processor))


def matching_vocabularies(bench: BenchModel, roots: list[Path] | None = None) -> dict[int, Path]:
    """``{k: directory}`` of the vocabularies under ``roots`` made for this model's patches and normalization."""
    found: dict[int, Path] = {}
    for root in vocabulary_roots() if roots is None else roots:
        for config_path in sorted(Path(root).glob("*/config.json")):
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not (config_path.parent / "vocab.safetensors").is_file():
                continue
            if isinstance(config.get("k"), int) and _fits(config, bench):
                found.setdefault(config["k"], config_path.parent)
    return dict(sorted(found.items()))


def _sample_patch_count(bench: BenchModel) -> int:
    return bench.num_patches * len(sample_images())


def resolve_vocabulary(bench: BenchModel, k: int, build_dir: str | Path | None = None,
                       roots: list[Path] | None = None) -> tuple[str, int]:
    """A vocabulary directory with ``k`` words for ``bench``'s model.

    A shipped one (see :func:`matching_vocabularies`) when there is one; otherwise one is built from the
    embedded sample photos with the model's own image processor into ``build_dir`` (reused when already
    there). ``k`` is lowered to a quarter of the sample's patches for tiny models.

    Returns:
        ``(directory, k)``: the k actually used.
    """
    found = matching_vocabularies(bench, roots)
    if k in found:
        return str(found[k]), k
    limit = max(2, _sample_patch_count(bench) // 4)
    if k > limit:
        logger.info("k=%d is more than a quarter of the %d sample patches: using k=%d", k,
                    _sample_patch_count(bench), limit)
        k = limit
        if k in found:
            return str(found[k]), k
    if build_dir is None:
        raise FileNotFoundError(f"no vocabulary with k={k} for patch size {bench.patch_size} and this model's "
                                "normalization; pass a build_dir to build one")
    out = Path(build_dir) / f"sample-p{bench.patch_size}-k{k}"
    if (out / "vocab.safetensors").is_file():
        return str(out), k

    logger.info("building a k=%d vocabulary for %s from the sample photos into %s", k, bench.name, out)
    build_vocabulary("sample", k, patch_size=bench.patch_size, image_processor=bench.image_processor, seed=0,
                     out=out, progress=False, command=f"vwt-bench (built on the fly for {bench.name})")
    return str(out), k
