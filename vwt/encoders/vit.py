"""ViT: ViTModel and ViTForImageClassification."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from .base import EncoderAdapter, register_adapter

__all__ = ["ViTAdapter"]


@register_adapter
class ViTAdapter(EncoderAdapter):
    """``embeddings`` -> ``layers`` -> ``layernorm`` (-> ``pooler``; -> ``classifier`` on CLS)."""

    model_classes = ("ViTModel", "ViTForImageClassification")

    @property
    def vision(self) -> nn.Module:
        return self.model if type(self.model).__name__ == "ViTModel" else self.model.vit

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        dtype = self.vision.embeddings.patch_embeddings.projection.weight.dtype
        return self.vision.embeddings(pixel_values.to(dtype), interpolate_pos_encoding=interpolate_pos_encoding)

    @property
    def layers(self) -> nn.ModuleList:
        return self.vision.layers

    def outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(f"unexpected arguments for {type(self.model).__name__}: {sorted(kwargs)}")
        sequence = self.vision.layernorm(hidden)
        if type(self.model).__name__ == "ViTForImageClassification":
            return ImageClassifierOutput(logits=self.model.classifier(sequence[:, 0]))
        pooled = self.vision.pooler(sequence) if self.vision.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=pooled)
