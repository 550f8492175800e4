"""SigLIP: SiglipVisionModel, SiglipModel (image features, zero-shot logits), SiglipForImageClassification.

SigLIP has no CLS token: every token can be merged, and the attention-pooling head sees the padding
mask (its ``nn.MultiheadAttention`` is called with ``key_padding_mask``). With token sizes, the same
float ``key_padding_mask`` adds ``log(size)`` of each token (size-aware pooling) and the classifier's
mean counts each token once per patch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import SiglipForImageClassification, SiglipModel, SiglipVisionModel
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
)
from transformers.models.siglip.modeling_siglip import SiglipOutput

from .base import EncoderAdapter, LayerParts, register_adapter
from .clip import clip_layer_parts, contrastive_head

__all__ = ["SiglipAdapter", "attention_pool", "masked_mean"]


def attention_pool(head: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                   token_sizes: torch.Tensor | None = None) -> torch.Tensor:
    """SigLIP's ``SiglipMultiheadAttentionPoolingHead`` driven by hand so that padding is ignored.

    Args:
        head: the model's pooling head (``probe``, ``attention``, ``layernorm``, ``mlp``).
        hidden: ``[B, S, D]`` post-layernorm hidden states.
        attention_mask: ``[B, S]``, 1 real, 0 padding.
        token_sizes: ``[B, S]`` patches per token: ``log(size)`` is added to the probe's logits.

    Returns:
        ``[B, D]``.
    """
    probe = head.probe.expand(hidden.shape[0], -1, -1)
    if token_sizes is None:
        ignore = attention_mask == 0  # True = ignore
    else:  # a float key_padding_mask is added to the logits (-inf, as the library makes of a boolean one)
        bias = token_sizes.clamp_min(1).to(torch.float32).log()
        ignore = bias.masked_fill(attention_mask == 0, float("-inf")).to(hidden.dtype)
    pooled = head.attention(probe, hidden, hidden, key_padding_mask=ignore)[0]
    pooled = pooled + head.mlp(head.layernorm(pooled))
    return pooled[:, 0]


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Weighted mean over the tokens: ``[B, S, D]``, ``[B, S]`` weights (the padding mask, or token
    sizes for a mean over patches; 0 for padding) -> ``[B, D]``."""
    weight = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weight).sum(1) / weight.sum(1)


@register_adapter
class SiglipAdapter(EncoderAdapter):
    """``embeddings`` -> ``encoder.layers`` -> ``post_layernorm`` (-> masked attention-pooling ``head``)."""

    model_classes = (SiglipVisionModel, SiglipModel, SiglipForImageClassification)
    num_prefix_tokens = 0

    @property
    def vision(self) -> nn.Module:
        return self.model if isinstance(self.model, SiglipVisionModel) else self.model.vision_model

    @property
    def needs_text_inputs(self) -> bool:
        """``SiglipModel``'s forward needs ``input_ids``."""
        return isinstance(self.model, SiglipModel)

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self.vision.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)

    @property
    def layers(self) -> nn.ModuleList:
        return self.vision.encoder.layers

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        return clip_layer_parts(layer)  # the same layer layout as CLIP's

    def outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor, token_sizes: torch.Tensor | None = None,
                *, input_ids: torch.Tensor | None = None, text_attention_mask: torch.Tensor | None = None) -> Any:
        name = type(self.model).__name__
        sequence = self.vision.post_layernorm(hidden)
        if isinstance(self.model, SiglipForImageClassification):
            if input_ids is not None:
                raise TypeError(f"{name} has no text tower: input_ids need a SiglipModel")
            weight = attention_mask if token_sizes is None else token_sizes * attention_mask
            return ImageClassifierOutput(logits=self.model.classifier(masked_mean(sequence, weight)))
        pooled = (attention_pool(self.vision.head, sequence, attention_mask, token_sizes) if self.vision.use_head
                  else None)
        vision_out = BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=pooled)
        if input_ids is None:
            return vision_out
        if not isinstance(self.model, SiglipModel):
            raise TypeError(f"{name} has no text tower: input_ids need a SiglipModel")
        return SiglipOutput(**contrastive_head(self.model, pooled, input_ids, text_attention_mask, self.model.logit_bias),
                            vision_model_output=vision_out)
