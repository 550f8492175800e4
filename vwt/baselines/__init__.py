"""Baselines run on the same unmodified Hugging Face models as the tokenizers."""

from .tome import (
    ToMe,
    ToMeConfig,
    bipartite_soft_matching,
    merge_source,
    merge_wavg,
    proportional_attention,
    schedule_r,
    token_counts,
)
from .dynamicvit import DynamicViT, DynamicViTConfig, TokenPredictor
from .quantize import quantize_int8

__all__ = [
    "DynamicViT",
    "DynamicViTConfig",
    "TokenPredictor",
    "ToMe",
    "ToMeConfig",
    "bipartite_soft_matching",
    "merge_source",
    "merge_wavg",
    "quantize_int8",
    "proportional_attention",
    "schedule_r",
    "token_counts",
]
