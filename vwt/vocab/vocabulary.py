"""A bag of visual words: k centroids of flattened patches, plus how they were made."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin, hf_hub_download
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import ConfigError, VocabularyConfig
from ..io import (
    BadFileError,
    DirectoryContents,
    check_local_path,
    check_regular_file,
    read_json,
)
from .card import vocabulary_card

__all__ = [
    "VisualVocabulary",
    "VocabularyLoadError",
    "VOCAB_FILE",
    "CONFIG_FILE",
    "VOCABULARY_CONTENTS",
    "check_local_path",
    "hub_arguments",
    "resolve_file",
]

logger = logging.getLogger(__name__)

VOCAB_FILE = "vocab.safetensors"
"""The file that holds the centroids (one safetensors tensor)."""
CONFIG_FILE = "config.json"
"""The file that holds the :class:`vwt.config.VocabularyConfig`."""
_TENSOR = "centroids"
VOCABULARY_CONTENTS = DirectoryContents(
    "a vocabulary", frozenset({CONFIG_FILE, VOCAB_FILE}), frozenset({"README.md", "tokenizer_config.json", ".gitattributes"})
)
"""What a saved vocabulary (or tokenizer) directory holds: the only kind of directory ``--overwrite`` replaces."""


class VocabularyLoadError(ValueError):
    """A vocabulary file that is missing, unreadable or inconsistent with its config."""


_HUB_KEYWORDS = ("revision", "cache_dir", "force_download", "local_files_only", "token")


def hub_arguments(revision: str | None = None, cache_dir: str | Path | None = None, force_download: bool = False,
                  local_files_only: bool = False, token: str | bool | None = None) -> dict[str, Any]:
    """The hub keywords of ``from_pretrained`` (as :class:`huggingface_hub.ModelHubMixin` names them)."""
    return dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
                local_files_only=local_files_only, token=token)


def resolve_file(model_id: str, filename: str, **hub_kwargs: Any) -> Path:
    """A file of a local directory, or of a hub repo (downloaded or from the local HF cache)."""
    if os.path.isdir(model_id):
        path = Path(model_id) / filename
        if not path.exists():
            raise FileNotFoundError(f"{path} not found")
        return path
    check_local_path(model_id)
    return Path(hf_hub_download(repo_id=model_id, filename=filename, **hub_kwargs))


def _check_centroids(centroids: torch.Tensor, config: VocabularyConfig, source: str) -> None:
    if not isinstance(centroids, torch.Tensor):
        raise VocabularyLoadError(f"{source}: centroids must be a tensor, got {type(centroids).__name__}")
    if centroids.dtype != torch.float32:
        raise VocabularyLoadError(f"{source}: centroids must be float32, got {centroids.dtype}")
    expected = (config.k, config.dim)
    if tuple(centroids.shape) != expected:
        raise VocabularyLoadError(
            f"{source}: centroids have shape {tuple(centroids.shape)}, the config says {expected} "
            f"(k={config.k}, {config.num_channels} channels x patch {config.patch_size}^2)"
        )
    if not torch.isfinite(centroids).all():
        raise VocabularyLoadError(f"{source}: centroids contain NaN or infinite values")


class VisualVocabulary(
    ModelHubMixin,
    library_name="vwt",
    tags=["vision", "visual-words", "token-reduction"],
    license="apache-2.0",
):
    """Visual words: ``centroids`` ``[k, C * p * p]`` float32 in the model's normalized pixel space.

    Save with ``save_pretrained(dir)`` (``vocab.safetensors``, ``config.json``, ``README.md``),
    load with ``VisualVocabulary.from_pretrained(dir_or_hub_id)``; loading checks shape, dtype and
    finiteness against the config and names the offending file on failure.
    """

    def __init__(self, centroids: torch.Tensor, config: VocabularyConfig) -> None:
        if isinstance(config, dict):
            config = VocabularyConfig.from_dict(config)
        _check_centroids(centroids, config, "VisualVocabulary")
        self.centroids = centroids
        self.config = config

    def __repr__(self) -> str:
        c = self.config
        return f"VisualVocabulary(k={c.k}, patch_size={c.patch_size}, dim={c.dim}, dataset={c.dataset!r})"

    def __len__(self) -> int:
        return self.config.k

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> VisualVocabulary:
        """Load from a local directory or a hub repo id (``revision``, ``cache_dir``, ``local_files_only``, ...).

        Not the mixin's loader: that one reads ``config.json`` unbounded and unchecked before ours does."""
        check_local_path(str(pretrained_model_name_or_path))
        hub = hub_arguments(**{name: kwargs.pop(name) for name in _HUB_KEYWORDS if name in kwargs})
        return cls._from_pretrained(model_id=str(pretrained_model_name_or_path), **hub, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        # The card is generated (huggingface_hub writes README.md only where none exists): drop a stale one.
        (save_directory / "README.md").unlink(missing_ok=True)
        save_file({_TENSOR: self.centroids.contiguous()}, str(save_directory / VOCAB_FILE), metadata={"format": "pt"})
        text = json.dumps(self.config.to_dict(), indent=2, sort_keys=True)
        (save_directory / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        return vocabulary_card(self, self._hub_mixin_info.model_card_data, **kwargs)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        **model_kwargs: Any,
    ) -> VisualVocabulary:
        model_kwargs.pop("config", None)  # parsed strictly below, from the file itself
        if model_kwargs:
            raise TypeError(f"unexpected arguments {sorted(model_kwargs)}")
        hub = hub_arguments(revision, cache_dir, force_download, local_files_only, token)
        config_path = resolve_file(model_id, CONFIG_FILE, **hub)
        vocab_path = resolve_file(model_id, VOCAB_FILE, **hub)
        try:
            config = VocabularyConfig.from_dict(read_json(config_path), str(config_path))
        except (BadFileError, ConfigError) as err:
            raise VocabularyLoadError(str(err)) from err
        try:
            check_regular_file(vocab_path)
            tensors = load_file(str(vocab_path))
        except BadFileError as err:
            raise VocabularyLoadError(str(err)) from err
        except (SafetensorError, OSError, ValueError) as err:
            raise VocabularyLoadError(f"{vocab_path}: not a readable safetensors file ({err})") from err
        if set(tensors) != {_TENSOR}:
            raise VocabularyLoadError(f"{vocab_path}: expected one tensor {_TENSOR!r}, found {sorted(tensors)}")
        _check_centroids(tensors[_TENSOR], config, f"{vocab_path} (config {config_path})")
        return cls(tensors[_TENSOR], config)
