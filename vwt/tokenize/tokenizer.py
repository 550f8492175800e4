"""Online tokenizers: images in, ``patch_to_token`` out, like a text tokenizer (no model weights needed).

Both return a :class:`transformers.BatchFeature` with

- ``pixel_values`` ``[B, C, H, W]``: the preprocessed images;
- ``patch_to_token`` ``[B, N]`` int64: the token each patch lands in, -1 if dropped;
- ``attention_mask`` ``[B, 1 + T]`` int64: CLS plus each image's tokens are 1, padding 0;
- ``num_tokens`` ``[B]`` int64: tokens per image, CLS excluded;
- ``token_sizes`` ``[B, T]`` int64: patches per token (1 for a kept patch, 0 for padding), for
  size-aware attention;
- ``word_ids`` ``[B, T]`` int64 (visual words only): the word of each token, -1 for a patch that
  matched no word and for padding.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelHubMixin
from huggingface_hub.errors import EntryNotFoundError
from transformers import BatchFeature

from ..config import (
    ConfigError,
    PreprocessConfig,
    TokenizerConfig,
    check_token_budget,
    dataclass_from_dict,
    token_budget,
)
from ..io import BadFileError, read_json
from ..patches import patch_variance, patchify
from ..preprocess import (
    default_image_processor,
    image_processor_from_config,
    preprocess_config,
    preprocess_images,
)
from ..validate import check_pixel_values
from ..vocab.card import vocabulary_card
from ..vocab.vocabulary import (
    VisualVocabulary,
    VocabularyLoadError,
    hub_arguments,
    resolve_file,
)
from .floor import closest_ranks, largest_passing, match_closest
from .matching import (
    apply_threshold,
    cosine_distance_to_words,
    count_token_sizes,
    group_tokens,
    keep_top_variance,
    match_words_budget,
    norm_bands,
    split_groups,
    token_attention_mask,
)
from .spatial import split_connected, split_windows

__all__ = ["VisualWordTokenizer", "IntraImageTokenizer", "TokenizerConfig", "TOKENIZER_CONFIG_FILE"]

logger = logging.getLogger(__name__)

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
"""The file that holds a saved tokenizer's settings (threshold or budget), beside its vocabulary."""


class _PatchTokenizer:
    """Shared input handling: images or pixel values to checked ``[B, C, H, W]`` and patches."""

    patch_size: int
    num_channels: int
    preprocess: PreprocessConfig
    image_processor: Any
    # Where tokenization runs and its output lives; None: wherever the pixel values are.
    device: torch.device | None = None

    def _check_processor(self, image_processor: Any | None) -> Any:
        if image_processor is None:
            return image_processor_from_config(self.preprocess)
        given = preprocess_config(image_processor)
        if not given.same_normalization(self.preprocess):
            raise ValueError(
                f"the image processor normalizes with mean {list(given.image_mean)} / std {list(given.image_std)}, "
                f"but the patches were taken with mean {list(self.preprocess.image_mean)} / std "
                f"{list(self.preprocess.image_std)}: use a vocabulary built with this model's processor "
                "(vwt-build-vocab --image-processor ...)"
            )
        return image_processor

    def _pixel_values(self, images: Any, pixel_values: torch.Tensor | None) -> torch.Tensor:
        if (images is None) == (pixel_values is None):
            raise ValueError("pass exactly one of images or pixel_values")
        if isinstance(images, torch.Tensor) and (images.ndim == 4 or images.is_floating_point()):
            raise TypeError("images looks like preprocessed pixel values: pass them as pixel_values=...")
        if pixel_values is None:
            if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
                images = [images]
            if len(images) == 0:
                raise ValueError("empty batch: no images to tokenize")
            pixel_values = preprocess_images(list(images), self.image_processor)
        if not isinstance(pixel_values, torch.Tensor):
            try:
                pixel_values = torch.as_tensor(pixel_values)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(f"pixel_values must be a tensor or an array of numbers ({err})") from None
        if pixel_values.ndim == 3:
            pixel_values = pixel_values.unsqueeze(0)
        if pixel_values.ndim != 4 or pixel_values.shape[0] == 0:
            raise ValueError(f"pixel_values must be a non-empty [B, C, H, W] batch, got {tuple(pixel_values.shape)}")
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values have {pixel_values.shape[1]} channels, the tokenizer expects {self.num_channels}"
            )
        if self.device is not None:
            pixel_values = pixel_values.to(self.device)
        check_pixel_values(pixel_values)
        return pixel_values.float()  # tokenization is float32 whatever the model's precision

    def _batch(self, pixel_values: torch.Tensor, patch_to_token: torch.Tensor, num_tokens: torch.Tensor,
               return_tensors: str | None, **extra: torch.Tensor) -> BatchFeature:
        length = int(num_tokens.max())
        data = {
            "pixel_values": pixel_values,
            "patch_to_token": patch_to_token,
            "attention_mask": token_attention_mask(num_tokens, length),
            "num_tokens": num_tokens,
            "token_sizes": count_token_sizes(patch_to_token, length),
            **extra,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)


class VisualWordTokenizer(
    _PatchTokenizer,
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


class IntraImageTokenizer(_PatchTokenizer):
    """Keep the most heterogeneous patches of each image (highest pixel variance), drop the rest.

    The budget is ``keep``, a fraction in ``(0, 1]`` of the patches (``round(keep * N)``, at least 1),
    or ``max_tokens``, a count (prefix tokens such as CLS are not counted); default ``keep=0.5``. The
    same rule as :class:`VisualWordTokenizer`'s budget, so ``keep=1`` keeps every patch.

    Args:
        keep: the fraction of the patches kept per image. An int above 1 (the old count) still works as
            ``max_tokens`` with a :class:`DeprecationWarning`.
        patch_size: the model's patch size.
        image_processor: the model's processor for PIL images (default: CLIP ViT-B/16's).
        num_channels: image channels.
        device: where tokenization runs and its batch lives; default: wherever the pixel values are.
        max_tokens: the number of patches kept per image, ``1 <= max_tokens <= N``.
    """

    def __init__(self, keep: float | None = None, patch_size: int = 16, image_processor: Any | None = None,
                 num_channels: int = 3, device: str | torch.device | None = None, *, max_tokens: int | None = None):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, (int, float))):
            raise TypeError(f"keep must be a fraction (a float), got {type(keep).__name__}")
        if isinstance(keep, int) and keep > 1 and max_tokens is None:  # the old meaning: a count of patches
            warnings.warn(f"IntraImageTokenizer(keep={keep}) as a number of patches is deprecated: keep is a "
                          f"fraction in (0, 1]; pass max_tokens={keep}", DeprecationWarning, stacklevel=2)
            keep, max_tokens = None, keep
        elif isinstance(keep, int) and keep == 1:  # the fraction 1 now, one patch before
            warnings.warn("IntraImageTokenizer(keep=1) keeps every patch (keep is a fraction); it kept one patch "
                          "before: pass max_tokens=1 for that, or keep=1.0 to silence this", FutureWarning,
                          stacklevel=2)
        if keep is None and max_tokens is None:
            keep = 0.5
        check_token_budget(max_tokens, keep)
        self.keep = None if keep is None else float(keep)
        self.max_tokens = max_tokens
        self.device = None if device is None else torch.device(device)
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.image_processor = image_processor if image_processor is not None else default_image_processor()
        self.preprocess = preprocess_config(self.image_processor)

    def __repr__(self) -> str:
        budget = f"keep={self.keep}" if self.keep is not None else f"max_tokens={self.max_tokens}"
        return f"IntraImageTokenizer({budget}, patch_size={self.patch_size})"

    def num_kept(self, num_patches: int) -> int:
        """Patches kept out of ``num_patches``."""
        return token_budget(num_patches, self.max_tokens, self.keep)

    def __call__(
        self, images: Any = None, *, pixel_values: torch.Tensor | None = None, return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """Tokenize a batch of images (PIL, arrays) or of preprocessed ``pixel_values`` ``[B, C, H, W]``."""
        pixel_values = self._pixel_values(images, pixel_values)
        variance = patch_variance(patchify(pixel_values, self.patch_size))  # [B, N]
        keep = self.num_kept(variance.shape[1])
        patch_to_token = keep_top_variance(variance, keep)
        num_tokens = torch.full((len(variance),), keep, dtype=torch.long, device=variance.device)
        return self._batch(pixel_values, patch_to_token, num_tokens, return_tensors)
