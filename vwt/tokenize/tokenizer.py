"""The visual-word tokenizer (inter-image): patches that match one visual word merge into one token.

Images in, ``patch_to_token`` out, like a text tokenizer (no model weights needed); the batch it returns
is described in :mod:`vwt.tokenize.base`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelHubMixin
from huggingface_hub.errors import EntryNotFoundError
from transformers import BatchFeature

from ..config import ConfigError, TokenizerConfig, dataclass_from_dict
from ..io import BadFileError, read_json
from ..patches import patchify
from ..vocab.card import vocabulary_card
from ..vocab.vocabulary import (
    VisualVocabulary,
    VocabularyLoadError,
    hub_arguments,
    resolve_file,
)
from .base import PatchTokenizer
from .floor import closest_ranks, largest_passing, match_closest
from .matching import (
    apply_threshold,
    cosine_distance_to_words,
    group_tokens,
    match_words_budget,
    norm_bands,
    split_groups,
)
from .spatial import split_connected, split_windows

__all__ = ["VisualWordTokenizer", "TokenizerConfig", "TOKENIZER_CONFIG_FILE"]

logger = logging.getLogger(__name__)

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
"""The file that holds a saved tokenizer's settings (threshold or budget), beside its vocabulary."""


class VisualWordTokenizer(
    PatchTokenizer,
    ModelHubMixin,
    library_name="vwt",
    tags=["vision", "visual-words", "token-reduction"],
    license="apache-2.0",
):
    """Merge patches that match the same visual word into one token.

    Each patch goes to its nearest word by cosine distance; patches sharing a word form one token
    (the encoder averages their embeddings, position encodings included). Which patches merge is
    decided by one of:

    - ``threshold`` (the paper): a patch whose distance is ``> threshold`` stays a token of its own.
      Images keep different numbers of tokens.
    - a token budget, ``max_tokens=N`` or ``keep=`` a fraction of the N patches: every image gets
      exactly that many tokens (static shapes, no padding). Patches join their own nearest word's
      group closest first until the budget is reached (ties: earlier patch in raster order); the
      rest stay single. The threshold is not used: stopping at the budget merges only the closest
      patches, which any threshold loose enough to reach the budget would merge too, and an image
      that a threshold would leave above the budget has to merge past it to keep the static
      length. An image with more distinct words than the budget (every patch joined its word and
      there are still too many tokens) keeps its largest word groups and each patch of another
      word joins the kept word nearest to it (:func:`vwt.tokenize.matching.fold_surplus_words`).

    Load with ``VisualWordTokenizer.from_pretrained(vocab_dir_or_hub_id, threshold=0.1)`` or
    ``(..., max_tokens=128)``.

    Args:
        vocabulary: the visual words.
        threshold: cosine-distance threshold; ``-1`` merges nothing, ``2`` merges every patch with its
            word (default 0.1 where no budget is given).
        image_processor: the model's processor, to preprocess PIL images (default: the one recorded in
            the vocabulary); its normalization must match the vocabulary's.
        max_tokens: tokens per image, ``1 <= max_tokens <= N`` (checked against N per call); a count of the
            image's tokens, as ``num_tokens``: prefix tokens (CLS) are not counted.
        keep: tokens per image as a fraction in ``(0, 1]`` of the patches (``round(keep * N)``, at least 1).
        connected: merge only patches of a word that touch (4-connected): each word's patches split into
            contiguous pieces (:func:`vwt.tokenize.spatial.split_connected`), so a merged token is one region.
            With a threshold only.
        window: merge only patches inside one ``window x window`` block of the patch grid
            (:func:`vwt.tokenize.spatial.split_windows`), so no token stands for patches far apart; with
            ``connected``, only touching patches of a word inside a block. ``1`` merges nothing. With a
            threshold only.
        norm_band: merge only patches whose norms (in normalized pixel space) lie in one band
            ``[b**i, b**(i + 1))`` of this ratio ``b > 1`` (:func:`vwt.tokenize.matching.norm_bands`):
            cosine distance alone would merge two shades of one colour. With a threshold only.
        min_keep: a floor, a fraction in ``(0, 1]``: an image the threshold would leave with fewer than
            ``round(min_keep * N)`` tokens (at least 1) matches only its closest patches, as many as keep it
            at the floor (:mod:`vwt.tokenize.floor`). Images above the floor are untouched. With a threshold only.
        device: where tokenization runs and its batch lives (e.g. ``"cuda"``, the model's device): the
            words move there once, pixel values on each call. Default: wherever the pixel values are.
    """

    def __init__(self, vocabulary: VisualVocabulary, threshold: float | None = None, image_processor: Any | None = None,
                 *, max_tokens: int | None = None, keep: float | None = None, connected: bool = False,
                 window: int | None = None, norm_band: float | None = None, min_keep: float | None = None,
                 device: str | torch.device | None = None):
        if not isinstance(vocabulary, VisualVocabulary):
            raise TypeError(f"vocabulary must be a VisualVocabulary, got {type(vocabulary).__name__}")
        if threshold is None and max_tokens is None and keep is None:
            threshold = TokenizerConfig.threshold
        self.vocabulary = vocabulary
        self.config = TokenizerConfig(threshold=None if threshold is None else float(threshold),
                                      max_tokens=max_tokens, keep=None if keep is None else float(keep),
                                      connected=bool(connected), window=window,
                                      norm_band=None if norm_band is None else float(norm_band),
                                      min_keep=min_keep)
        self.device = None if device is None else torch.device(device)
        self._unit_words = torch.nn.functional.normalize(vocabulary.centroids.to(self.device), dim=-1)  # once
        self.patch_size = vocabulary.config.patch_size
        self.num_channels = vocabulary.config.num_channels
        self.preprocess = vocabulary.config.preprocess
        self.image_processor = self._check_processor(image_processor)

    @property
    def threshold(self) -> float | None:
        """The cosine-distance threshold, None with a token budget."""
        return self.config.threshold

    def __repr__(self) -> str:
        c = self.config
        knob = f"threshold={c.threshold}" if c.threshold is not None else (
            f"max_tokens={c.max_tokens}" if c.max_tokens is not None else f"keep={c.keep}")
        knob += ", connected=True" if c.connected else ""
        knob += f", window={c.window}" if c.window is not None else ""
        knob += f", norm_band={c.norm_band}" if c.norm_band is not None else ""
        knob += f", min_keep={c.min_keep}" if c.min_keep is not None else ""
        return f"VisualWordTokenizer(k={self.vocabulary.config.k}, patch_size={self.patch_size}, {knob})"

    def __call__(
        self, images: Any = None, *, pixel_values: torch.Tensor | None = None, return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """Tokenize a batch of images (PIL, arrays) or of preprocessed ``pixel_values`` ``[B, C, H, W]``."""
        pixel_values = self._pixel_values(images, pixel_values)
        words = self._unit_words.to(pixel_values.device)  # a no-op where device= put them there already
        patches = patchify(pixel_values, self.patch_size)
        size = pixel_values.shape[-2:]
        budget = self.config.budget(patches.shape[1])
        if budget is None:
            distance, word = cosine_distance_to_words(patches, words, unit_words=True)  # [B, N] each
            word_ids = apply_threshold(distance, word, self.threshold)
        else:
            word_ids = match_words_budget(patches, words, budget, unit_words=True)
        patch_to_token, num_tokens = group_tokens(*self._split(word_ids, patches, size))
        floored = None if self.config.min_keep is None else self._floor(word_ids, distance, word, patches, size,
                                                                         num_tokens)
        if floored is not None:
            word_ids = floored
            patch_to_token, num_tokens = group_tokens(*self._split(word_ids, patches, size))
        token_words = torch.full((len(word_ids), int(num_tokens.max())), -1, dtype=torch.long, device=word_ids.device)
        token_words.scatter_(1, patch_to_token, word_ids)  # all patches of a token share its word
        return self._batch(pixel_values, patch_to_token, num_tokens, return_tensors, word_ids=token_words)

    def _floor(self, word_ids: torch.Tensor, distance: torch.Tensor, word: torch.Tensor, patches: torch.Tensor,
               size: tuple[int, int], num_tokens: torch.Tensor) -> torch.Tensor | None:
        """``word_ids`` ``[B, N]`` with each image below the ``min_keep`` floor matching only its closest patches;
        None where no image is below it."""
        n = patches.shape[1]
        floor = max(1, round(self.config.min_keep * n))
        low = num_tokens < floor  # [B]
        if not bool(low.any()):  # one host sync per call; the common case costs nothing more
            return None
        word, patches = word[low], patches[low]
        ranks = closest_ranks(distance[low])

        def keeps_floor(count: torch.Tensor) -> torch.Tensor:
            return group_tokens(*self._split(match_closest(word, ranks, count), patches, size))[1] >= floor

        count = largest_passing(keeps_floor, (word_ids[low] >= 0).sum(1), n)
        word_ids = word_ids.clone()
        word_ids[low] = match_closest(word, ranks, count)
        return word_ids

    def _split(self, word_ids: torch.Tensor, patches: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, int]:
        """Group keys after the configured splits (norm band, window, connected) and their number of values."""
        c = self.config
        if c.norm_band is None and c.window is None and not c.connected:
            return word_ids, len(self.vocabulary.centroids)
        grid = (size[0] // self.patch_size, size[1] // self.patch_size)
        if c.norm_band is not None:
            word_ids = split_groups(word_ids, norm_bands(patches, c.norm_band))  # [B, N] in [-1, N)
        if c.window is not None:
            word_ids = split_windows(word_ids, grid, c.window)
        if c.connected:
            word_ids = split_connected(word_ids, grid)
        return word_ids, patches.shape[1]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> VisualWordTokenizer:
        """Load from a vocabulary or tokenizer directory or hub repo id.

        ``threshold=``, ``max_tokens=`` or ``keep=`` replace the saved settings as a whole (so a saved
        threshold gives way to a budget given here, and the other way round).
        """
        return cls._from_pretrained(model_id=str(pretrained_model_name_or_path), **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        self.vocabulary._save_pretrained(save_directory)  # the words; the card (README.md) is the tokenizer's
        text = json.dumps(asdict(self.config), indent=2, sort_keys=True)
        (save_directory / TOKENIZER_CONFIG_FILE).write_text(text + "\n", encoding="utf-8")

    def generate_model_card(self, *args: Any, **kwargs: Any) -> Any:
        """The vocabulary's card, plus this tokenizer's threshold (also added to the token-count table) or budget."""
        card_data = self._hub_mixin_info.model_card_data
        c = self.config
        if c.threshold is None:
            budget = f"`max_tokens={c.max_tokens}`" if c.max_tokens is not None else f"`keep={c.keep}`"
            kwargs = {"Token budget": f"{budget} (`tokenizer_config.json`): every image gets exactly this many "
                                      "tokens, the patches closest to their word merged first.", **kwargs}
        return vocabulary_card(self.vocabulary, card_data, threshold=c.threshold, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, threshold: float | None = None, max_tokens: int | None = None,
                         keep: float | None = None, image_processor: Any | None = None, connected: bool | None = None,
                         window: int | None = None, norm_band: float | None = None, min_keep: float | None = None,
                         device: str | torch.device | None = None, **hub_kwargs: Any) -> VisualWordTokenizer:
        hub_kwargs.pop("config", None)
        vocabulary = VisualVocabulary.from_pretrained(model_id, **hub_kwargs)  # never the mixin's loader
        hub_kwargs = hub_arguments(**hub_kwargs)
        if threshold is None and max_tokens is None and keep is None:
            try:
                path = resolve_file(model_id, TOKENIZER_CONFIG_FILE, **hub_kwargs)
            except (FileNotFoundError, EntryNotFoundError):  # a plain vocabulary: the default threshold
                path = None
            if path is not None:
                try:
                    saved = dataclass_from_dict(TokenizerConfig, read_json(path), str(path))
                except (BadFileError, ConfigError) as err:
                    raise VocabularyLoadError(str(err)) from err
                threshold, max_tokens, keep = saved.threshold, saved.max_tokens, saved.keep
                connected = saved.connected if connected is None else connected
                window = saved.window if window is None else window
                norm_band = saved.norm_band if norm_band is None else norm_band
                min_keep = saved.min_keep if min_keep is None else min_keep
        return cls(vocabulary, threshold=threshold, image_processor=image_processor, max_tokens=max_tokens, keep=keep,
                   connected=bool(connected), window=window, norm_band=norm_band, min_keep=min_keep, device=device)
