"""DINOv2: Dinov2Model (position encodings interpolated to any image size by the model itself)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Dinov2Model
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .base import EncoderAdapter, LayerParts, register_adapter

__all__ = ["Dinov2Adapter"]


@register_adapter
class Dinov2Adapter(EncoderAdapter):
    """``embeddings`` -> ``encoder.layer`` -> ``layernorm``; ``pooler_output`` is the normed CLS."""

    model_classes = (Dinov2Model,)
    interpolates_positions = True

    @property
    def vision(self) -> nn.Module:
        return self.model

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self.vision.embeddings(pixel_values)

    @property
    def layers(self) -> nn.ModuleList:
        return self.vision.encoder.layer

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        attn = layer.attention
        return LayerParts(norm1=layer.norm1, q=attn.q_proj, k=attn.k_proj, v=attn.v_proj, out=attn.o_proj,
                          norm2=layer.norm2, mlp=layer.mlp, num_heads=int(attn.num_attention_heads),
                          head_dim=int(attn.head_dim), scale=float(attn.scaling),
                          attention_dropout=float(attn.attention_dropout), attention=attn,
                          scale1=layer.layer_scale1, scale2=layer.layer_scale2, residual_dropout=layer.drop_path)

    def outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                token_sizes: torch.Tensor | None = None) -> Any:
        sequence = self.vision.layernorm(hidden)
        return BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=sequence[:, 0])
