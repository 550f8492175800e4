"""Model cards (README.md with a YAML header) for vocabularies."""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from .config import VocabularyConfig

__all__ = ["vocabulary_card"]

_DATASET_IDS = {"imagenet": "ILSVRC/imagenet-1k"}


def _describe_preprocess(config: VocabularyConfig) -> str:
    proc = config.preprocess.processor
    fields = ("size", "resample", "do_center_crop", "crop_size", "rescale_factor")
    parts = [f"{name}={proc[name]}" for name in fields if name in proc]
    return f"{config.preprocess.processor_type}({', '.join(parts)})"


def vocabulary_card(config: VocabularyConfig, card_data: ModelCardData | None = None, **extra: Any) -> ModelCard:
    """A model card for a vocabulary: what data built it, in which preprocessing, and how to rebuild it."""
    data = ModelCardData(**(card_data.to_dict() if card_data is not None else {}))
    dataset_id = _DATASET_IDS.get(config.dataset, config.dataset)
    if "/" in dataset_id and not dataset_id.startswith(("/", ".")):
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
    for key, value in sorted(c.extra.items()):
        lines.append(f"| {key} | {value} |")
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
        "from vwt import VisualVocabulary",
        'vocab = VisualVocabulary.from_pretrained("<this repo or directory>")',
        "```",
    ]
    for key, value in extra.items():
        lines += ["", f"## {key}", "", str(value)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
