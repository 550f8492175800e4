"""CLIP: CLIPVisionModel, CLIPVisionModelWithProjection and CLIPModel (image features, zero-shot logits)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import CLIPModel, CLIPVisionModel, CLIPVisionModelWithProjection
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPOutput, CLIPVisionModelOutput

from .base import EncoderAdapter, LayerParts, register_adapter
from .linear import LinearPatchEmbedding

__all__ = ["CLIPAdapter", "clip_layer_parts", "contrastive_head"]


def clip_layer_parts(layer: nn.Module) -> LayerParts:
    """``layer_norm1`` -> ``self_attn`` (q/k/v/out_proj) -> ``layer_norm2`` -> ``mlp``: CLIP and SigLIP layers."""
    attn = layer.self_attn
    return LayerParts(norm1=layer.layer_norm1, q=attn.q_proj, k=attn.k_proj, v=attn.v_proj, out=attn.out_proj,
                      norm2=layer.layer_norm2, mlp=layer.mlp, num_heads=int(attn.num_heads),
                      head_dim=int(attn.head_dim), scale=float(attn.scale), attention_dropout=float(attn.dropout),
                      attention=attn)


def contrastive_head(model: nn.Module, image_features: torch.Tensor, input_ids: torch.Tensor,
                     text_attention_mask: torch.Tensor | None, logit_bias: torch.Tensor | None = None) -> dict[str, Any]:
    """Zero-shot logits of a two-tower model (CLIPModel, SiglipModel), as its own forward computes them.

    The text tower runs on ``input_ids`` ``[T, L]`` (moved to the image features' device), both embeddings
    are L2-normalized, and ``logits_per_text = text @ image.T * exp(logit_scale) (+ logit_bias)``.

    Args:
        model: the two-tower model (``get_text_features``, ``logit_scale``).
        image_features: ``[B, D]`` projected image features.
        input_ids: ``[T, L]`` text tokens; text_attention_mask: ``[T, L]`` or None.
        logit_bias: added to the logits (SigLIP), or None (CLIP).

    Returns:
        The fields the family's output class shares: ``logits_per_image`` ``[B, T]``, ``logits_per_text``,
        ``text_embeds``, ``image_embeds`` (normalized) and ``text_model_output``.
    """
    device = image_features.device
    text_out = model.get_text_features(input_ids=input_ids.to(device),
                                       attention_mask=None if text_attention_mask is None
                                       else text_attention_mask.to(device))
    image_embeds = image_features / image_features.norm(dim=-1, keepdim=True)
    text_embeds = text_out.pooler_output / text_out.pooler_output.norm(dim=-1, keepdim=True)
    logits_per_text = text_embeds @ image_embeds.T * model.logit_scale.exp()
    if logit_bias is not None:
        logits_per_text = logits_per_text + logit_bias
    return dict(logits_per_image=logits_per_text.T, logits_per_text=logits_per_text, text_embeds=text_embeds,
                image_embeds=image_embeds, text_model_output=text_out)


@register_adapter
class CLIPAdapter(EncoderAdapter):
    """``embeddings`` -> ``pre_layrnorm`` -> ``encoder.layers`` -> ``post_layernorm`` on CLS (-> projection)."""

    model_classes = (CLIPVisionModel, CLIPVisionModelWithProjection, CLIPModel)

    @property
    def vision(self) -> nn.Module:
        return self.model if isinstance(self.model, CLIPVisionModel) else self.model.vision_model

    @property
    def needs_text_inputs(self) -> bool:
        """``CLIPModel``'s forward needs ``input_ids``."""
        return isinstance(self.model, CLIPModel)

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self.vision.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)

    def linear_patch_embedding(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
                               ) -> LinearPatchEmbedding | None:
        embeddings = self.vision.embeddings
        if interpolate_pos_encoding:
            return None
        conv, positions = embeddings.patch_embedding, embeddings.position_embedding.weight  # [1 + N, D]
        return LinearPatchEmbedding(weight=conv.weight.flatten(1), bias=conv.bias, positions=positions[1:],
                                    prefix=(embeddings.class_embedding + positions[0]).unsqueeze(0),
                                    patch_size=self.patch_size)

    def before_layers(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.vision.pre_layrnorm(hidden)

    @property
    def layers(self) -> nn.ModuleList:
        return self.vision.encoder.layers

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        return clip_layer_parts(layer)

    def outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor, token_sizes: torch.Tensor | None = None,
                *, input_ids: torch.Tensor | None = None, text_attention_mask: torch.Tensor | None = None) -> Any:
        pooled = self.vision.post_layernorm(hidden[:, 0])
        vision_out = BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)
        name = type(self.model).__name__
        if isinstance(self.model, CLIPVisionModel):
            return vision_out
        projected = self.model.visual_projection(pooled)
        if input_ids is None:
            return CLIPVisionModelOutput(image_embeds=projected, last_hidden_state=hidden)
        if not isinstance(self.model, CLIPModel):
            raise TypeError(f"{name} has no text tower: input_ids need a CLIPModel")
        return CLIPOutput(
            **contrastive_head(self.model, projected, input_ids, text_attention_mask),
            # as CLIPModel.get_image_features: the vision output's pooler_output is the projected CLS
            vision_model_output=BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=projected),
        )
