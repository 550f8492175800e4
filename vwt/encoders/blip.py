"""BLIP: BlipVisionModel and BlipForConditionalGeneration (vision features, text logits, captions).

BLIP's vision attention (``BlipAttention``) takes no attention mask at all, so a padded batch cannot
go through ``BlipEncoderLayer.forward``. The adapter drives each layer's submodules itself
(``layer_norm1``, ``self_attn.qkv``, ``self_attn.projection``, ``layer_norm2``, ``mlp``) and applies
the padding mask between the query-key product and the softmax, with the same arithmetic as
``BlipAttention``.

The text decoder is the library's own, called as ``BlipForConditionalGeneration`` calls it, with the
image padding mask as ``encoder_attention_mask``. But transformers 5.23 drops that mask on the way
(``BlipTextLayer`` hands it to ``BlipTextAttention`` as ``attention_mask``, which
``BlipTextSelfAttention`` then ignores for cross-attention), so the decoder would attend to padded
image rows. The adapter therefore runs the decoder once per image length, on the unpadded rows
(:func:`length_buckets`): a batch without padding is one call, exactly the library's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn
from transformers import BlipForConditionalGeneration, BlipVisionModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.blip.modeling_blip import (
    BlipForConditionalGenerationModelOutput,
)

from .base import EncoderAdapter, register_adapter

__all__ = ["BlipAdapter", "length_buckets", "masked_blip_attention", "masked_blip_layer"]


def masked_blip_attention(attn: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``BlipAttention`` with a 4D attention mask.

    Args:
        attn: the layer's ``BlipAttention`` (``qkv``, ``projection``, ``scale``, ``dropout``).
        hidden: ``[B, S, D]``.
        mask: ``[B, 1, S, S]`` additive float mask or boolean mask (True = attend), or None.

    Returns:
        ``[B, S, D]``.
    """
    b, s, d = hidden.shape
    q, k, v = attn.qkv(hidden).reshape(b, s, 3, attn.num_heads, d // attn.num_heads).permute(2, 0, 3, 1, 4)
    scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scale
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask.to(scores.dtype)
    probs = attn.dropout(scores.softmax(dim=-1))
    context = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(b, s, d)
    return attn.projection(context)


def masked_blip_layer(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One ``BlipEncoderLayer`` (pre-norm attention and MLP, residuals) with a 4D attention mask: ``[B, S, D]``."""
    hidden = hidden + masked_blip_attention(layer.self_attn, layer.layer_norm1(hidden), mask)
    return hidden + layer.mlp(layer.layer_norm2(hidden))


def length_buckets(attention_mask: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """Rows of a right-padded mask grouped by their number of real tokens.

    Args:
        attention_mask: ``[B, S]``, 1 real, 0 padding, real tokens first.

    Returns:
        ``[(rows, length), ...]``: int64 row indices ``[B_i]`` and their common length, by length.
    """
    lengths = attention_mask.sum(1)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions < lengths.unsqueeze(1)):
        raise ValueError("the image attention mask must be right-padded: real tokens first, then padding")
    return [(torch.nonzero(lengths == n).flatten(), n) for n in lengths.unique().tolist()]


@register_adapter
class BlipAdapter(EncoderAdapter):
    """``embeddings`` -> masked ``encoder.layers`` -> ``post_layernorm`` (-> ``text_decoder`` with the image mask)."""

    model_classes = (BlipVisionModel, BlipForConditionalGeneration)

    @property
    def vision(self) -> nn.Module:
        return self.model if isinstance(self.model, BlipVisionModel) else self.model.vision_model

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        return self.vision.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)

    @property
    def layers(self) -> Sequence[Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]]:
        """Each ``BlipEncoderLayer`` as a callable ``(hidden, mask_4d) -> hidden`` that honours the mask."""
        return tuple(partial(masked_blip_layer, layer) for layer in self.vision.encoder.layers)

    @property
    def needs_text_inputs(self) -> bool:
        """``BlipForConditionalGeneration``'s forward needs ``input_ids``."""
        return isinstance(self.model, BlipForConditionalGeneration)

    def _captioner(self) -> nn.Module:
        if not isinstance(self.model, BlipForConditionalGeneration):
            name = type(self.model).__name__
            raise TypeError(f"{name} has no text decoder: text needs a BlipForConditionalGeneration")
        return self.model

    def outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor, token_sizes: torch.Tensor | None = None,
                *, input_ids: torch.Tensor | None = None, text_attention_mask: torch.Tensor | None = None) -> Any:
        """Vision features; with ``input_ids`` (BlipForConditionalGeneration) the text decoder's logits too."""
        sequence = self.vision.post_layernorm(hidden)
        # BlipVisionModel applies post_layernorm to the CLS row a second time for pooler_output.
        pooled = self.vision.post_layernorm(sequence[:, 0])
        if input_ids is None:
            return BaseModelOutputWithPooling(last_hidden_state=sequence, pooler_output=pooled)
        decoder = self._captioner().text_decoder
        logits = None
        for rows, n in length_buckets(attention_mask):
            out = decoder(
                input_ids=input_ids[rows],
                attention_mask=None if text_attention_mask is None else text_attention_mask[rows],
                encoder_hidden_states=sequence[rows, :n],
                encoder_attention_mask=attention_mask[rows, :n],
            )
            if logits is None:
                logits = out.logits.new_empty(len(sequence), *out.logits.shape[1:])
            logits[rows] = out.logits
        return BlipForConditionalGenerationModelOutput(logits=logits, image_embeds=sequence, last_hidden_state=sequence)

    @torch.no_grad()
    def generate(self, hidden: torch.Tensor, attention_mask: torch.Tensor, input_ids: Any = None,
                 text_attention_mask: torch.Tensor | None = None, **generate_kwargs: Any) -> torch.LongTensor:
        """Captions, as ``BlipForConditionalGeneration.generate`` makes them, padded images included.

        Args:
            hidden: ``[B, S, D]`` last-layer hidden states (before ``post_layernorm``).
            attention_mask: ``[B, S]`` right-padded image mask (1 real, 0 padding); the decoder runs on
                each image's real rows only (see the module notes).
            input_ids: optional prompt ``[B, L]`` (as the BLIP processor tokenizes it, ending in [SEP]).
            text_attention_mask: the prompt's attention mask ``[B, L]``.
            generate_kwargs: for ``text_decoder.generate`` (``max_new_tokens``, ``num_beams``, ...).

        Returns:
            ``[B * num_return_sequences, L']`` token ids, the prompt (with [BOS] first) included, finished
            captions padded with ``pad_token_id`` as in a batched ``generate``.
        """
        model = self._captioner()
        text_config = model.config.text_config
        image_embeds = self.vision.post_layernorm(hidden)
        if input_ids is None:
            input_ids = torch.tensor([[text_config.bos_token_id, text_config.eos_token_id]], device=hidden.device)
            input_ids = input_ids.repeat(hidden.shape[0], 1)
        else:  # a copy: the library overwrites the caller's first column in place
            input_ids = torch.as_tensor(input_ids, dtype=torch.long, device=hidden.device).clone()
        input_ids[:, 0] = text_config.bos_token_id
        if text_attention_mask is not None:
            text_attention_mask = text_attention_mask[:, :-1]
        results = []
        for rows, n in length_buckets(attention_mask):
            out = model.text_decoder.generate(
                input_ids=input_ids[rows, :-1],
                eos_token_id=text_config.sep_token_id,
                pad_token_id=text_config.pad_token_id,
                attention_mask=None if text_attention_mask is None else text_attention_mask[rows],
                encoder_hidden_states=image_embeds[rows, :n],
                encoder_attention_mask=attention_mask[rows, :n],
                **generate_kwargs,
            )
            results.append((rows, out))
        if len(results) == 1:
            return results[0][1]
        if not all(isinstance(out, torch.Tensor) for _, out in results):
            raise TypeError("return_dict_in_generate is not supported for a padded batch: generate its images apart")
        per_image = len(results[0][1]) // len(results[0][0])  # num_return_sequences
        length = max(out.shape[1] for _, out in results)
        ids = results[0][1].new_full((len(hidden), per_image, length), text_config.pad_token_id)
        for rows, out in results:
            ids[rows, :, : out.shape[1]] = out.view(len(rows), per_image, -1)
        return ids.view(-1, length)
