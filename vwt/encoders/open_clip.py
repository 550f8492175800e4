"""open_clip image towers: ``open_clip.transformer.VisionTransformer``, alone or inside a ``CLIP`` model.

Driven through the tower's own submodules: ``conv1`` + ``class_embedding`` + ``positional_embedding`` ->
``patch_dropout`` -> merge -> ``ln_pre`` -> ``transformer.resblocks`` (each with ``attn_mask``) ->
``ln_post`` and pooling (``tok``/``avg``/``none``, or CoCa's attentional pooler, which sees the padding
and ``log(size)`` as its key padding mask) -> ``proj``. ``image_embeds`` is what ``encode_image``
(``normalize=False``) returns. open_clip is imported only when an open_clip model is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.utils import ModelOutput

from .base import EncoderAdapter, LayerParts, register_adapter
from .fused import fused_qkv
from .linear import LinearPatchEmbedding

__all__ = ["OpenClipAdapter", "OpenClipOutput", "attentional_pool", "multihead_mask"]


@dataclass
class OpenClipOutput(ModelOutput):
    """An open_clip image tower's outputs: ``image_embeds`` (``encode_image``), ``pooler_output`` (before
    ``proj``) and ``last_hidden_state`` (every token, CLS first; after ``ln_post`` where the tower applies it
    to the tokens, so ``last_hidden_state[:, 1:]`` is what ``output_tokens=True`` returns)."""

    image_embeds: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


def _vision_tower(model: nn.Module) -> nn.Module | None:
    if not type(model).__module__.startswith("open_clip."):
        return None
    from open_clip.transformer import VisionTransformer

    tower = model if isinstance(model, VisionTransformer) else getattr(model, "visual", None)
    return tower if isinstance(tower, VisionTransformer) else None


def multihead_mask(mask: torch.Tensor | None, num_heads: int, length: int, dtype: torch.dtype) -> torch.Tensor | None:
    """A 4-D mask of :mod:`vwt.encoders.masks` (or transformers') as ``nn.MultiheadAttention`` takes it.

    Args:
        mask: ``[B, 1, Q, S]`` additive float, or bool with True where attending is allowed; ``Q`` is 1
            or the query length.
        num_heads: H.
        length: L, the query length.

    Returns:
        ``[B * H, L, S]`` additive float (the same bias for every head), or None.
    """
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        mask = torch.zeros((), dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    b, _, _, s = mask.shape
    return mask.to(dtype).expand(b, num_heads, length, s).reshape(b * num_heads, length, s)


def attentional_pool(pooler: nn.Module, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """open_clip's ``AttentionalPooler`` with padding ignored and ``log(size)`` of each token added.

    Args:
        pooler: ``ln_k``, ``ln_q``, ``query`` ``[Q, D']``, ``attn`` (``nn.MultiheadAttention``, batch first).
        hidden: ``[B, S, D]``.
        weight: ``[B, S]`` patches per token, 0 for padding.

    Returns:
        ``[B, Q, D']``.
    """
    keys = pooler.ln_k(hidden)
    query = pooler.ln_q(pooler.query).unsqueeze(0).expand(len(hidden), -1, -1)
    bias = weight.clamp_min(1).to(torch.float32).log().masked_fill(weight == 0, float("-inf")).to(keys.dtype)
    return pooler.attn(query, keys, keys, need_weights=False, key_padding_mask=bias)[0]


class _Block:
    """One of the tower's blocks, called as the runner calls a layer: ``(hidden [B, S, D], 4-D mask)``."""

    def __init__(self, block: nn.Module, num_heads: int, batch_first: bool) -> None:
        self.block, self.num_heads, self.batch_first = block, num_heads, batch_first

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        attn_mask = multihead_mask(mask, self.num_heads, hidden.shape[1], hidden.dtype)
        if self.batch_first:
            return self.block(hidden, attn_mask=attn_mask)
        return self.block(hidden.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)


@register_adapter
class OpenClipAdapter(EncoderAdapter):
    """open_clip's ``VisionTransformer`` image tower (a ``CLIP``'s ``visual``, or the tower itself)."""

    described_models = ("open_clip.CLIP", "open_clip.transformer.VisionTransformer")
    forward_takes_pixel_values = False  # forward(image, text) returns bare tensors

    @classmethod
    def handles(cls, model: nn.Module) -> bool:
        return _vision_tower(model) is not None

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        tower = _vision_tower(model)
        patch, size = tower.patch_size, tower.image_size
        if patch[0] != patch[1]:
            raise ValueError(f"vwt needs square patches; this open_clip tower's are {patch[0]}x{patch[1]}")
        config = PretrainedConfig(hidden_size=int(tower.transformer.width), patch_size=int(patch[0]),
                                  image_size=(int(size[0]), int(size[1])), num_channels=int(tower.conv1.in_channels))
        config._attn_implementation = "sdpa"  # blocks take an additive float mask (converted per head)
        self._config = config
        self._tower = tower
        self._layers = [_Block(block, int(block.attn.num_heads), bool(tower.transformer.batch_first))
                        for block in tower.transformer.resblocks]

    @property
    def vision(self) -> nn.Module:
        return self._tower

    @property
    def vision_config(self) -> PretrainedConfig:
        """The tower's geometry as a config (open_clip has none): hidden size, patch and image size."""
        return self._config

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        if interpolate_pos_encoding:
            raise ValueError("open_clip towers have positions for their own image size only")
        tower = self._tower
        x = tower.conv1(pixel_values.to(tower.conv1.weight.dtype)).flatten(2).transpose(1, 2)  # [B, N, D]
        cls = tower.class_embedding.to(x.dtype).expand(len(x), 1, -1)
        return tower.patch_dropout(torch.cat([cls, x], dim=1) + tower.positional_embedding.to(x.dtype))

    def linear_patch_embedding(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
                               ) -> LinearPatchEmbedding | None:
        tower = self._tower
        if interpolate_pos_encoding or tower.training:  # training: patch dropout applies
            return None
        positions = tower.positional_embedding  # [1 + N, D]
        return LinearPatchEmbedding(weight=tower.conv1.weight.flatten(1), bias=tower.conv1.bias, positions=positions[1:],
                                    prefix=(tower.class_embedding + positions[0]).unsqueeze(0),
                                    patch_size=self.patch_size)

    def before_layers(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._tower.ln_pre(hidden)

    @property
    def layers(self) -> list[_Block]:
        return self._layers

    def layer_parts(self, layer: _Block) -> LayerParts:
        from open_clip.transformer import ResidualAttentionBlock

        block = layer.block
        attn = block.attn
        if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
            raise TypeError(f"only open_clip ResidualAttentionBlock layers are exposed, got {type(block).__name__}")
        heads, head_dim = int(attn.num_heads), int(attn.head_dim)
        q, k, v = fused_qkv(attn.in_proj_weight, attn.in_proj_bias, heads, head_dim)
        return LayerParts(norm1=block.ln_1, q=q, k=k, v=v, out=attn.out_proj, norm2=block.ln_2, mlp=block.mlp,
                          num_heads=heads, head_dim=head_dim, scale=head_dim ** -0.5,
                          attention_dropout=float(attn.dropout), attention=attn, scale1=block.ls_1, scale2=block.ls_2)

    def _global_pool(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The tower's ``_global_pool`` (pooled part) with token weights ``[B, S]`` (0 for padding)."""
        pool_type = self._tower.pool_type
        if pool_type == "tok":
            return x[:, 0]
        if pool_type == "avg":
            w = weight[:, 1:].to(x.dtype).unsqueeze(-1)
            return (x[:, 1:] * w).sum(1) / w.sum(1)
        return x

    def outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                token_sizes: torch.Tensor | None = None) -> Any:
        tower = self._tower
        weight = attention_mask if token_sizes is None else token_sizes * attention_mask
        sequence = hidden
        if tower.attn_pool is None:
            if tower.final_ln_after_pool:
                pooled = tower.ln_post(self._global_pool(hidden, weight))
            else:
                sequence = tower.ln_post(hidden)
                pooled = self._global_pool(sequence, weight)
        elif tower.attn_pool_contrastive is None:  # open_clip's CoCa setup: pool, then ln_post over the queries
            queries = tower.ln_post(attentional_pool(tower.attn_pool, hidden, weight))
            pooled = self._global_pool(queries, torch.ones_like(queries[..., 0]))
        else:
            sequence = tower.ln_post(hidden)
            if tower.attn_pool_type == "parallel":
                pooled = attentional_pool(tower.attn_pool_contrastive, sequence, weight)
            else:  # cascade: over the pooled queries (no padding there)
                queries = attentional_pool(tower.attn_pool, sequence, weight)
                pooled = tower.attn_pool_contrastive(queries)
        embeds = pooled @ tower.proj if tower.proj is not None else pooled
        return OpenClipOutput(image_embeds=embeds, pooler_output=pooled, last_hidden_state=sequence)
