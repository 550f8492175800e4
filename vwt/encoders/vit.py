"""ViT: ViTModel and ViTForImageClassification."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import ViTForImageClassification, ViTModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
)

from .base import EncoderAdapter, LayerParts, register_adapter
from .linear import LinearPatchEmbedding

__all__ = ["ViTAdapter"]


@register_adapter
class ViTAdapter(EncoderAdapter):
    """``embeddings`` -> ``layers`` -> ``layernorm`` (-> ``pooler``; -> ``classifier`` on CLS)."""

    model_classes = (ViTModel, ViTForImageClassification)

    @property
    def vision(self) -> nn.Module:
        return self.model if isinstance(self.model, ViTModel) else self.model.vit

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        dtype = self.vision.embeddings.patch_embeddings.projection.weight.dtype
        return self.vision.embeddings(pixel_values.to(dtype), interpolate_pos_encoding=interpolate_pos_encoding)

    def linear_patch_embedding(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
                               ) -> LinearPatchEmbedding | None:
        embeddings = self.vision.embeddings
        if interpolate_pos_encoding or embeddings.training:  # training: the embedding's dropout applies
            return None
        conv, positions = embeddings.patch_embeddings.projection, embeddings.position_embeddings[0]  # [1 + N, D]
        return LinearPatchEmbedding(weight=conv.weight.flatten(1), bias=conv.bias, positions=positions[1:],
                                    prefix=embeddings.cls_token[0] + positions[:1], patch_size=self.patch_size)

    @property
    def layers(self) -> nn.ModuleList:
        return self.vision.layers

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        attn = layer.attention
        return LayerParts(norm1=layer.layernorm_before, q=attn.q_proj, k=attn.k_proj, v=attn.v_proj, out=attn.o_proj,
                          norm2=layer.layernorm_after, mlp=layer.mlp, num_heads=int(attn.num_attention_heads),
                          head_dim=int(attn.head_dim), scale=float(attn.scaling),
                          attention_dropout=float(attn.attention_dropout), attention=attn, residual_dropout=layer.dropout)

    def outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                token_sizes: torch.Tensor | None = None) -> Any:
        sequence = self.vision.layernorm(hidden)
        if isinstance(self.model, ViTForImageClassification):
            return ImageClassifierOutput(logits=self.model.classifier(sequence[:, 0]))
        pooled = self.vision.pooler(sequence) if self.vision.pooler is not None else None
        return BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=pooled)
