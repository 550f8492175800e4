"""CLIP: CLIPVisionModel, CLIPVisionModelWithProjection and CLIPModel (image features, zero-shot logits)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPOutput, CLIPVisionModelOutput

from .base import EncoderAdapter, register_adapter

__all__ = ["CLIPAdapter"]


@register_adapter
class CLIPAdapter(EncoderAdapter):
    """``embeddings`` -> ``pre_layrnorm`` -> ``encoder.layers`` -> ``post_layernorm`` on CLS (-> projection)."""

    model_classes = ("CLIPVisionModel", "CLIPVisionModelWithProjection", "CLIPModel")

    @property
    def vision(self) -> nn.Module:
        return self.model if type(self.model).__name__ == "CLIPVisionModel" else self.model.vision_model

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self.vision.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)

    def before_layers(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.vision.pre_layrnorm(hidden)

    @property
    def layers(self) -> nn.ModuleList:
        return self.vision.encoder.layers

    def outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor, *, input_ids: torch.Tensor | None = None,
                text_attention_mask: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(f"unexpected arguments for {type(self.model).__name__}: {sorted(kwargs)}")
        pooled = self.vision.post_layernorm(hidden[:, 0])
        vision_out = BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)
        name = type(self.model).__name__
        if name == "CLIPVisionModel":
            return vision_out
        projected = self.model.visual_projection(pooled)
        if input_ids is None:
            return CLIPVisionModelOutput(image_embeds=projected, last_hidden_state=hidden)
        if name != "CLIPModel":
            raise TypeError(f"{name} has no text tower: input_ids need a CLIPModel")
        text_out = self.model.get_text_features(input_ids=input_ids.to(hidden.device),
                                                attention_mask=None if text_attention_mask is None
                                                else text_attention_mask.to(hidden.device))
        text_embeds = text_out.pooler_output
        image_embeds = projected / projected.norm(dim=-1, keepdim=True)
        text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
        logits_per_text = text_embeds @ image_embeds.T * self.model.logit_scale.exp()
        return CLIPOutput(
            logits_per_image=logits_per_text.T,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_out,
            # as CLIPModel.get_image_features: the vision output's pooler_output is the projected CLS
            vision_model_output=BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=projected),
        )
