"""Run an unmodified Hugging Face vision model on a tokenizer's output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask, packed_sequence_mask_function

from ..batching import BATCHING, pack, plan_buckets, plan_packing, unpack
from ..matching import merge_tokens, token_attention_mask
from .base import EncoderAdapter, adapter_for

__all__ = ["VisualWordModel", "encode", "embed_tokens", "check_batch", "check_pixels"]


def check_pixels(adapter: EncoderAdapter, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> int:
    """Raise a clear error where images do not fit the model; return their number of patches."""
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be [B, C, H, W], got {tuple(pixel_values.shape)}")
    _, c, h, w = pixel_values.shape
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
    return (h // p) * (w // p)


def check_batch(adapter: EncoderAdapter, pixel_values: torch.Tensor, patch_to_token: torch.Tensor,
                interpolate_pos_encoding: bool = False) -> None:
    """Raise a clear error where a tokenized batch does not fit the model."""
    n = check_pixels(adapter, pixel_values, interpolate_pos_encoding)
    if patch_to_token.shape != (len(pixel_values), n):
        raise ValueError(
            f"patch_to_token has shape {tuple(patch_to_token.shape)} but the model cuts these images into "
            f"{len(pixel_values)} x {n} patches of {adapter.patch_size}px: was the tokenizer built for another "
            "patch size?"
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


def _inputs(batch: Mapping[str, Any] | None, kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``pixel_values``, ``patch_to_token`` and ``attention_mask`` from keyword arguments or the batch.

    Found keys are popped from ``kwargs``; what is left goes to the family's head.
    """
    found = []
    for name in ("pixel_values", "patch_to_token", "attention_mask"):
        value = kwargs.pop(name, None)
        found.append(value if value is not None or batch is None else batch.get(name))
    return tuple(found)


class VisualWordModel:
    """An unmodified Hugging Face vision model that consumes a vwt tokenizer's output.

    Patch embeddings + position encodings are computed by the model's own embedding module,
    averaged into tokens by ``patch_to_token``, CLS kept first, then the model's own layers and
    norms run with a padding mask built by ``create_bidirectional_mask``. Returns the model's usual
    output type (``last_hidden_state``/``pooler_output``, CLIP ``image_embeds`` and logits, ViT
    classification ``logits``, ...). Rows of ``last_hidden_state`` where ``attention_mask`` is 0 are
    padding (for SigLIP, which has no CLS, the rows line up with ``attention_mask[:, 1:]``).

    Args:
        model: a supported Hugging Face model (see :func:`vwt.encoders.supported_models`).
        batching: how images of different token counts share a batch: ``"pad"`` (pad to the longest),
            ``"bucket"`` (groups of similar length run separately) or ``"pack"`` (several images per
            sequence, block-diagonal attention). All give each image its own result.
        num_buckets: groups per batch for ``"bucket"``.
        pack_capacity: tokens per packed sequence for ``"pack"`` (default: the unreduced length).

    Example::

        batch = tokenizer(images)
        outputs = VisualWordModel(model, batching="pack")(batch)
    """

    def __init__(self, model: nn.Module, batching: str = "pad", num_buckets: int = 4,
                 pack_capacity: int | None = None) -> None:
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, got {batching!r}")
        self.adapter = adapter_for(model)
        self.model = model
        self.batching = batching
        self.num_buckets = num_buckets
        self.pack_capacity = pack_capacity

    def __repr__(self) -> str:
        return f"VisualWordModel({type(self.model).__name__}, batching={self.batching!r})"

    def _layers(self, hidden: torch.Tensor, mask: torch.Tensor, num_patches: int) -> torch.Tensor:
        """The model's layers on ``[B, S, D]`` with padding mask ``[B, S]``, batched as configured."""
        config = self.adapter.vision_config
        lengths = mask.sum(1)
        if self.batching == "pack" and len(hidden) > 1:
            capacity = self.pack_capacity or int(self.adapter.has_cls) + num_patches
            plan = plan_packing(lengths, capacity)
            packed, segment = pack(hidden, lengths, plan)
            mask_4d = create_bidirectional_mask(config=config, inputs_embeds=packed, attention_mask=None,
                                                and_mask_function=packed_sequence_mask_function(segment))
            for layer in self.adapter.layers:
                packed = layer(packed, mask_4d)
            return unpack(packed, lengths, plan, hidden.shape[1])
        if self.batching == "bucket" and len(hidden) > 1:
            out = torch.zeros_like(hidden)
            for index in plan_buckets(lengths, self.num_buckets):
                width = int(lengths[index].max())
                out[index, :width] = self._padded_layers(hidden[index, :width], mask[index, :width])
            return out
        return self._padded_layers(hidden, mask)

    def _padded_layers(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask_4d = create_bidirectional_mask(config=self.adapter.vision_config, inputs_embeds=hidden,
                                            attention_mask=mask)
        for layer in self.adapter.layers:
            hidden = layer(hidden, mask_4d)
        return hidden

    def hidden_states(self, batch: Mapping[str, Any] | None = None, *, interpolate_pos_encoding: bool = False,
                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer hidden states ``[B, S, D]`` and the 2D padding mask ``[B, S]``."""
        pixel_values, patch_to_token, attention_mask = _inputs(batch, kwargs)
        if pixel_values is None:
            raise ValueError("the batch has no pixel_values")
        device = next(self.model.parameters()).device
        pixel_values = pixel_values.to(device)
        b, _, h, w = pixel_values.shape
        p = self.adapter.patch_size
        num_patches = (h // p) * (w // p)
        if patch_to_token is None:  # plain pixel values: every patch is a token
            patch_to_token = torch.arange(num_patches, device=device).expand(b, -1)
        if attention_mask is None:  # derive it: tokens are numbered 0..T_i-1 per image
            attention_mask = token_attention_mask(patch_to_token.max(dim=1).values + 1)
        attention_mask = attention_mask.to(device)
        hidden = embed_tokens(self.adapter, pixel_values, patch_to_token.to(device), attention_mask.shape[1] - 1,
                              interpolate_pos_encoding)
        mask = attention_mask if self.adapter.has_cls else attention_mask[:, 1:]
        return self._layers(self.adapter.before_layers(hidden), mask, num_patches), mask

    def __call__(self, batch: Mapping[str, Any] | None = None, *, interpolate_pos_encoding: bool = False,
                 **kwargs: Any) -> Any:
        """Run the model on a tokenized batch (``pixel_values``, ``patch_to_token``, ``attention_mask``).

        Extra keyword arguments go to the family's head, e.g. ``input_ids`` for CLIP zero-shot logits.
        """
        kwargs = dict(kwargs)
        hidden, mask = self.hidden_states(batch, interpolate_pos_encoding=interpolate_pos_encoding,
                                          **dict(zip(_INPUTS, _inputs(batch, kwargs))))
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
                                          **dict(zip(_INPUTS, _inputs(batch, kwargs))))
        return generate(hidden, mask, **kwargs)


_INPUTS = ("pixel_values", "patch_to_token", "attention_mask")


def encode(model: nn.Module, batch: Mapping[str, Any], **kwargs: Any) -> Any:
    """Shorthand for ``VisualWordModel(model)(batch, **kwargs)``."""
    return VisualWordModel(model)(batch, **kwargs)
