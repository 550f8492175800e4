"""One small adapter per model family; importing this package registers them all."""

from . import blip, clip, dinov2, open_clip, siglip, timm, vit  # noqa: F401  (registration; timm, open_clip: lazily)
from .base import (
    EncoderAdapter,
    LayerParts,
    adapter_for,
    register_adapter,
    supported_models,
)
from .run import VisualWordModel, check_batch, check_pixels, embed_tokens, encode

__all__ = [
    "EncoderAdapter",
    "LayerParts",
    "VisualWordModel",
    "adapter_for",
    "check_batch",
    "check_pixels",
    "embed_tokens",
    "encode",
    "register_adapter",
    "supported_models",
]
