"""Run an unmodified Hugging Face vision model on a tokenizer's output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from ..matching import merge_tokens
from .base import EncoderAdapter, adapter_for

__all__ = ["VisualWordModel", "encode", "embed_tokens", "check_batch"]


def check_batch(adapter: EncoderAdapter, pixel_values: torch.Tensor, patch_to_token: torch.Tensor,
                interpolate_pos_encoding: bool = False) -> None:
    """Raise a clear error where a tokenized batch does not fit the model."""
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be [B, C, H, W], got {tuple(pixel_values.shape)}")
    b, c, h, w = pixel_values.shape
    if c != adapter.num_channels:
        raise ValueError(f"pixel_values have {c} channels, the model expects {adapter.num_channels}")
    p = adapter.patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the model's patch size {p}")
    if (h, w) != adapter.image_size and not (interpolate_pos_encoding or adapter.interpolates_positions):
        raise ValueError(
            f"image size {h}x{w} does not match the model's {adapter.image_size[0]}x{adapter.image_size[1]}; "
            "preprocess with the model's image processor or pass interpolate_pos_encoding=True"
        )
    n = (h // p) * (w // p)
    if patch_to_token.shape != (b, n):
        raise ValueError(
            f"patch_to_token has shape {tuple(patch_to_token.shape)} but the model cuts these images into "
            f"{b} x {n} patches of {p}px: was the tokenizer built for another patch size?"
        )


def embed_tokens(adapter: EncoderAdapter, pixel_values: torch.Tensor, patch_to_token: torch.Tensor,
                 num_tokens: int, interpolate_pos_encoding: bool = False) -> torch.Tensor:
    """Patch embeddings plus positions, scatter-meaned into tokens, CLS first.

    Returns:
        ``[B, has_cls + T, D]``.
    """
    check_batch(adapter, pixel_values, patch_to_token, interpolate_pos_encoding)
    embeddings = adapter.embed(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
    prefix = int(adapter.has_cls)
    tokens = merge_tokens(embeddings[:, prefix:], patch_to_token.to(embeddings.device), num_tokens)
    return torch.cat([embeddings[:, :prefix], tokens], dim=1)


def _get(batch: Mapping[str, Any] | None, kwargs: dict[str, Any], name: str) -> Any:
    if name in kwargs:
        return kwargs.pop(name)
    return None if batch is None else batch.get(name)


class VisualWordModel:
    """An unmodified Hugging Face vision model that consumes a vwt tokenizer's output.

    Patch embeddings + position encodings are computed by the model's own embedding module,
    averaged into tokens by ``patch_to_token``, CLS kept first, then the model's own layers and
    norms run with a padding mask built by ``create_bidirectional_mask``. Returns the model's usual
    output type (``last_hidden_state``/``pooler_output``, CLIP ``image_embeds`` and logits, ViT
    classification ``logits``, ...). Rows of ``last_hidden_state`` where ``attention_mask`` is 0 are
    padding.

    Example::

        batch = tokenizer(images)
        outputs = VisualWordModel(model)(batch)
    """

    def __init__(self, model: nn.Module) -> None:
        self.adapter = adapter_for(model)
        self.model = model

    def __repr__(self) -> str:
        return f"VisualWordModel({type(self.model).__name__})"

    def hidden_states(self, batch: Mapping[str, Any] | None = None, *, interpolate_pos_encoding: bool = False,
                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer hidden states ``[B, S, D]`` and the 2D padding mask ``[B, S]``."""
        pixel_values = _get(batch, kwargs, "pixel_values")
        patch_to_token = _get(batch, kwargs, "patch_to_token")
        attention_mask = _get(batch, kwargs, "attention_mask")
        if pixel_values is None:
            raise ValueError("the batch has no pixel_values")
        device = next(self.model.parameters()).device
        pixel_values = pixel_values.to(device)
        if patch_to_token is None:  # plain pixel values: every patch is a token
            b, _, h, w = pixel_values.shape
            p = self.adapter.patch_size
            patch_to_token = torch.arange((h // p) * (w // p), device=device).expand(b, -1)
        if attention_mask is None:
            attention_mask = torch.ones(len(patch_to_token), 1 + int(patch_to_token.max()) + 1, dtype=torch.long)
        attention_mask = attention_mask.to(device)
        num_tokens = attention_mask.shape[1] - 1
        hidden = embed_tokens(self.adapter, pixel_values, patch_to_token.to(device), num_tokens,
                              interpolate_pos_encoding)
        mask = attention_mask if self.adapter.has_cls else attention_mask[:, 1:]
        hidden = self.adapter.before_layers(hidden)
        mask_4d = create_bidirectional_mask(config=self.adapter.vision_config, inputs_embeds=hidden,
                                            attention_mask=mask)
        for layer in self.adapter.layers:
            hidden = layer(hidden, mask_4d)
        return hidden, mask

    def __call__(self, batch: Mapping[str, Any] | None = None, *, interpolate_pos_encoding: bool = False,
                 **kwargs: Any) -> Any:
        """Run the model on a tokenized batch (``pixel_values``, ``patch_to_token``, ``attention_mask``).

        Extra keyword arguments go to the family's head, e.g. ``input_ids`` for CLIP zero-shot logits.
        """
        kwargs = dict(kwargs)
        hidden, mask = self.hidden_states(batch, interpolate_pos_encoding=interpolate_pos_encoding,
                                          pixel_values=_get(batch, kwargs, "pixel_values"),
                                          patch_to_token=_get(batch, kwargs, "patch_to_token"),
                                          attention_mask=_get(batch, kwargs, "attention_mask"))
        return self.adapter.outputs(hidden, mask, **kwargs)

    @torch.no_grad()
    def generate(self, batch: Mapping[str, Any] | None = None, *, interpolate_pos_encoding: bool = False,
                 **kwargs: Any) -> Any:
        """Generate text from a tokenized batch (e.g. BLIP captions), the image padding mask included.

        Extra keyword arguments go to the family's ``generate`` (``input_ids``, ``max_new_tokens``, ...).
        """
        generate = getattr(self.adapter, "generate", None)
        if generate is None:
            raise TypeError(f"{type(self.model).__name__} does not generate text (its adapter has no generate)")
        kwargs = dict(kwargs)
        hidden, mask = self.hidden_states(batch, interpolate_pos_encoding=interpolate_pos_encoding,
                                          pixel_values=_get(batch, kwargs, "pixel_values"),
                                          patch_to_token=_get(batch, kwargs, "patch_to_token"),
                                          attention_mask=_get(batch, kwargs, "attention_mask"))
        return generate(hidden, mask, **kwargs)


def encode(model: nn.Module, batch: Mapping[str, Any], **kwargs: Any) -> Any:
    """Shorthand for ``VisualWordModel(model)(batch, **kwargs)``."""
    return VisualWordModel(model)(batch, **kwargs)
