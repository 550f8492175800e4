"""Model cards (README.md with a YAML header) for vocabularies and visual-word tokenizers.

A card says what built the words (data, images and patches seen, preprocessing, seed), the command
that rebuilds them, and how many tokens they leave on the embedded sample photos
(:func:`vwt.vocab.data.sample_images`) at a few thresholds (:func:`token_count_stats`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from huggingface_hub import ModelCard, ModelCardData

from ..config import PreprocessConfig, VocabularyConfig
from ..patches import patchify
from ..preprocess import image_processor_from_config, preprocess_images
from ..tokenize.matching import apply_threshold, cosine_distance_to_words, group_tokens
from .data import DATASET_ALIASES, sample_images


class VisualVocabulary(Protocol):
    """What a card reads of a vocabulary (a :class:`vwt.VisualVocabulary`; no import, so no cycle)."""

    centroids: torch.Tensor
    config: VocabularyConfig

__all__ = ["DEFAULT_THRESHOLDS", "TokenCountStats", "token_count_stats", "vocabulary_card"]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.05, 0.1, 0.2)
"""Cosine-distance thresholds reported in a card's token-count table."""


@dataclass(frozen=True)
class TokenCountStats:
    """Tokens per image (CLS excluded) that a vocabulary leaves at one threshold, over a set of images."""

    # Cosine-distance threshold of the tokenizer.
    threshold: float
    # Images tokenized.
    num_images: int
    # Patches per image before merging (N).
    num_patches: int
    # Mean, min and max tokens per image.
    mean: float
    min: int
    max: int


@functools.lru_cache(maxsize=4)
def _sample_pixel_values(preprocess_json: str) -> torch.Tensor:
    """The sample photos preprocessed by the recorded processor: ``[S, C, H, W]`` float32 (cached per processor)."""
    preprocess = PreprocessConfig.from_dict(json.loads(preprocess_json), "preprocess")
    processor = image_processor_from_config(preprocess)
    return preprocess_images([image for _, image in sample_images()], processor)


def token_count_stats(
    vocabulary: VisualVocabulary,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    pixel_values: torch.Tensor | None = None,
) -> list[TokenCountStats]:
    """Tokens per image that ``VisualWordTokenizer(vocabulary, threshold)`` leaves, at each threshold.

    Counted from one nearest-word match shared by all thresholds: unmatched patches (distance
    ``> threshold``) plus the distinct words of the matched ones, which is the tokenizer's ``num_tokens``.

    Args:
        vocabulary: the visual words.
        thresholds: cosine-distance thresholds.
        pixel_values: ``[S, C, H, W]`` images in the vocabulary's preprocessing; default: the embedded
            sample photos (:func:`vwt.vocab.data.sample_images`, about 18), preprocessed with the processor
            recorded in the vocabulary (cached per processor: a repeated card costs one nearest-word match).

    Returns:
        One :class:`TokenCountStats` per threshold, in the given order.
    """
    if pixel_values is None:
        preprocess = json.dumps(vocabulary.config.to_dict()["preprocess"], sort_keys=True)
        pixel_values = _sample_pixel_values(preprocess)
    # One nearest-word match shared by all thresholds, then the tokenizer's own grouping.
    distance, word = cosine_distance_to_words(patchify(pixel_values.float(), vocabulary.config.patch_size),
                                              vocabulary.centroids)  # [S, N], [S, N]
    num_images, num_patches = distance.shape
    stats = []
    for threshold in thresholds:
        word_ids = apply_threshold(distance, word, threshold)
        _, counts = group_tokens(word_ids, vocabulary.config.k)  # [S], the tokenizer's num_tokens
        stats.append(
            TokenCountStats(
                threshold=float(threshold),
                num_images=num_images,
                num_patches=num_patches,
                mean=float(counts.double().mean()),
                min=int(counts.min()),
                max=int(counts.max()),
            )
        )
    return stats


def _describe_preprocess(config: VocabularyConfig) -> str:
    proc = config.preprocess.processor
    fields = ("size", "resample", "do_center_crop", "crop_size", "rescale_factor")
    parts = [f"{name}={proc[name]}" for name in fields if name in proc]
    return f"{config.preprocess.processor_type}({', '.join(parts)})"


def _stats_lines(vocabulary: VisualVocabulary, thresholds: Sequence[float], highlight: float | None) -> list[str]:
    """The card's token-count section; empty (with a logged warning) where the sample photos do not fit."""
    try:
        stats = token_count_stats(vocabulary, thresholds)
    except Exception as err:  # noqa: BLE001 - a card without statistics beats no card
        logger.warning("no token-count statistics in the card: %s: %s", type(err).__name__, err)
        return []
    n = stats[0].num_patches
    lines = [
        "",
        "## Token counts",
        "",
        f"Tokens per image (CLS excluded) when the {stats[0].num_images} sample photos embedded in `vwt` "
        f"(`vwt.vocab.data.sample_images()`: scikit-image, scikit-learn and matplotlib photos) are tokenized with "
        f"these words, out of N={n} patches per image. A patch whose cosine distance to its nearest word "
        "is above the threshold stays a token of its own."
        + (" These are the photos the words were learned from: in-sample counts, likely lower than "
           "on unseen images." if vocabulary.config.dataset == "sample" else ""),
        "",
        "| threshold | mean tokens | min | max | mean tokens / N |",
        "|---|---|---|---|---|",
    ]
    for s in stats:
        mark = " (this tokenizer)" if highlight is not None and s.threshold == highlight else ""
        lines.append(f"| {s.threshold:g}{mark} | {s.mean:.1f} | {s.min} | {s.max} | {s.mean / n:.0%} |")
    return lines


def vocabulary_card(
    vocabulary: VisualVocabulary | VocabularyConfig,
    card_data: ModelCardData | None = None,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    threshold: float | None = None,
    **extra: Any,
) -> ModelCard:
    """A model card for a vocabulary (or a tokenizer built on one).

    Args:
        vocabulary: the vocabulary; a bare :class:`VocabularyConfig` gives a card without token counts.
        card_data: YAML header fields (the hub mixin's ``library_name``, ``tags``, ``license``);
            ``datasets`` is added where the data is a hub dataset (``imagenet``: ``ILSVRC/imagenet-1k``).
        thresholds: thresholds of the token-count table.
        threshold: a tokenizer's own threshold: recorded in the card and added to the table.
        extra: more sections, ``title -> text``.
    """
    config = vocabulary if isinstance(vocabulary, VocabularyConfig) else vocabulary.config
    data = ModelCardData(**(card_data.to_dict() if card_data is not None else {}))
    dataset_id = DATASET_ALIASES.get(config.dataset, config.dataset)
    if "/" in dataset_id and not dataset_id.startswith(("/", ".", "~")):
        data.datasets = [dataset_id]
    c, pre = config, config.preprocess
    lines = [
        f"# Visual words: k={c.k}, patch {c.patch_size}",
        "",
        "A bag of visual words for the `vwt` package: k-means centroids of image patches "
        "in a model's normalized pixel space. Patches that match the same word are merged into one token "
        "before the Vision Transformer runs.",
        "",
        "| field | value |",
        "|---|---|",
        f"| words (k) | {c.k} |",
        f"| patch size | {c.patch_size} ({c.num_channels} channels, {c.dim} values per word) |",
        f"| image size | {pre.image_size[0]}x{pre.image_size[1]} |",
        f"| preprocessing | `{_describe_preprocess(c)}` |",
        f"| normalization | mean {list(pre.image_mean)}, std {list(pre.image_std)} |",
        f"| data | `{c.dataset}`" + (f" (split `{c.split}`)" if c.split else "") + " |",
        f"| images seen / skipped | {c.num_images} / {c.num_skipped} |",
        f"| patches clustered | {c.num_patches}"
        + (f" ({c.patches_per_image} sampled per image)" if c.patches_per_image else "")
        + " |",
        f"| k-means | scikit-learn MiniBatchKMeans, partial_fit batches of {c.batch_size}, seed {c.seed} |",
        f"| built with | vwt {c.vwt_version} |",
    ]
    if threshold is not None:
        lines.append(f"| tokenizer threshold | {threshold:g} (cosine distance, `tokenizer_config.json`) |")
    for key, value in sorted(c.extra.items()):
        lines.append(f"| {key} | {value} |")
    if not isinstance(vocabulary, VocabularyConfig):
        table = sorted({*map(float, thresholds), *([float(threshold)] if threshold is not None else [])})
        lines += _stats_lines(vocabulary, table, None if threshold is None else float(threshold))
    loader = (
        f'tokenizer = VisualWordTokenizer.from_pretrained("<this repo or directory>")  # threshold {threshold:g}'
        if threshold is not None
        else 'tokenizer = VisualWordTokenizer.from_pretrained("<this repo or directory>", threshold=0.1)'
    )
    lines += [
        "",
        "## Rebuild",
        "",
        "```bash",
        c.command or "(built from Python; no command recorded)",
        "```",
        "",
        "## Use",
        "",
        "```python",
        "from vwt import VisualVocabulary, VisualWordTokenizer",
        "",
        'vocab = VisualVocabulary.from_pretrained("<this repo or directory>")',
        loader,
        "batch = tokenizer(images)  # pixel_values, patch_to_token, attention_mask, num_tokens, word_ids",
        "```",
    ]
    for key, value in extra.items():
        lines += ["", f"## {key}", "", str(value)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
