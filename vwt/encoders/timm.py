"""timm Vision Transformers: ``timm.models.VisionTransformer`` and its subclasses (DeiT distilled, ...).

Driven through the model's own submodules: ``patch_embed`` -> ``_pos_embed`` (class, register and
distillation tokens first, positions added, resampled for ``dynamic_img_size``) -> ``patch_drop`` ->
merge -> ``norm_pre`` -> ``blocks`` (each called with ``attn_mask``) -> ``norm`` -> pooling -> ``fc_norm``
-> ``head``. The prefix tokens (``model.num_prefix_tokens``) are never merged and stay first.

Pooling sees the padding: ``avg`` is a mean weighted by token size (one weight per patch, so nothing
merged is the model's mean), ``max`` ignores padding, ``map`` (``AttentionPoolLatent``) gets the padding
and ``log(size)`` as its attention mask. timm is imported only when a timm model is given.
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

__all__ = ["TimmAdapter", "TimmOutput", "is_timm_model", "pool_tokens"]


@dataclass
class TimmOutput(ModelOutput):
    """What a timm ViT computes: ``logits`` (``model(x)``), ``pooler_output`` (``forward_head(...,
    pre_logits=True)``) and ``last_hidden_state`` (``forward_features``, prefix tokens first)."""

    logits: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None



def is_timm_model(model: nn.Module) -> bool:
    """Whether ``model`` is a timm ``VisionTransformer`` (imports timm only for a model from timm)."""
    if not type(model).__module__.startswith("timm."):
        return False
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


def pool_tokens(hidden: torch.Tensor, weight: torch.Tensor, pool_type: str) -> torch.Tensor:
    """timm's ``global_pool_nlc`` over tokens of different sizes, padding ignored.

    Args:
        hidden: ``[B, S, D]`` tokens to pool (prefix tokens already cut off where timm cuts them).
        weight: ``[B, S]`` patches per token (0 for padding): ``avg`` is the mean over patches.
        pool_type: ``"avg"``, ``"max"`` or ``"avgmax"``.

    Returns:
        ``[B, D]``.
    """
    w = weight.to(hidden.dtype).unsqueeze(-1)
    mean = (hidden * w).sum(1) / w.sum(1)
    if pool_type == "avg":
        return mean
    peak = hidden.masked_fill(weight.unsqueeze(-1) == 0, float("-inf")).amax(1)
    if pool_type == "max":
        return peak
    if pool_type == "avgmax":
        return 0.5 * (peak + mean)
    raise ValueError(f"unsupported timm pool type {pool_type!r}")


@register_adapter
class TimmAdapter(EncoderAdapter):
    """A timm ``VisionTransformer`` (class token or none, registers, distillation token, token/avg/max/map
    pooling, layer scale, ``dynamic_img_size``)."""

    described_models = ("timm.models.VisionTransformer",)
    forward_takes_pixel_values = False  # forward(x) returns a bare tensor

    @classmethod
    def handles(cls, model: nn.Module) -> bool:
        return is_timm_model(model)

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        patch = tuple(int(v) for v in model.patch_embed.patch_size)
        if patch[0] != patch[1]:
            raise ValueError(f"vwt needs square patches; this timm model's are {patch[0]}x{patch[1]}")
        config = PretrainedConfig(hidden_size=int(model.embed_dim), patch_size=patch[0],
                                  image_size=tuple(int(v) for v in model.patch_embed.img_size),
                                  num_channels=int(model.patch_embed.proj.in_channels))
        config._attn_implementation = "sdpa"  # every timm block takes an additive float or boolean attn_mask
        self._config = config

    @property
    def vision(self) -> nn.Module:
        return self.model

    @property
    def vision_config(self) -> PretrainedConfig:
        """The model's geometry as a config (timm models have none): hidden size, patch and image size."""
        return self._config

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.model.num_prefix_tokens)

    @property
    def interpolates_positions(self) -> bool:  # type: ignore[override]
        return bool(self.model.dynamic_img_size)

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        model = self.model
        if interpolate_pos_encoding and not model.dynamic_img_size:
            raise ValueError("this timm model resamples positions only when created with dynamic_img_size=True")
        x = model.patch_embed(pixel_values.to(model.patch_embed.proj.weight.dtype))
        return model.patch_drop(model._pos_embed(x))

    def linear_patch_embedding(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
                               ) -> LinearPatchEmbedding | None:
        from timm.layers import PatchEmbed
        from timm.models.deit import VisionTransformerDistilled
        from timm.models.vision_transformer import VisionTransformer

        model, embed = self.model, self.model.patch_embed
        plain = (type(embed) is PatchEmbed and isinstance(embed.norm, nn.Identity) and not embed.dynamic_img_pad
                 and isinstance(embed.proj, nn.Conv2d))
        known = type(model) in (VisionTransformer, VisionTransformerDistilled)
        if not (plain and known) or model.pos_embed is None or model.dynamic_img_size or model.training:
            return None  # embed every patch, merge afterwards (always exact)
        prefix = [t for t in (model.cls_token, getattr(model, "dist_token", None), model.reg_token) if t is not None]
        prefix = torch.cat(prefix, dim=1)[0] if prefix else model.pos_embed.new_zeros(0, model.embed_dim)  # [P, D]
        positions = model.pos_embed[0]
        if not model.no_embed_class:  # the table has rows for the prefix tokens too
            prefix, positions = prefix + positions[: len(prefix)], positions[len(prefix):]
        return LinearPatchEmbedding(weight=embed.proj.weight.flatten(1), bias=embed.proj.bias, positions=positions,
                                    prefix=prefix, patch_size=self.patch_size)

    def before_layers(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.norm_pre(hidden)

    @property
    def layers(self) -> nn.Sequential:
        return self.model.blocks

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        from timm.layers import Attention
        from timm.models.vision_transformer import Block

        attn = getattr(layer, "attn", None)
        if type(layer) is not Block or type(attn) is not Attention or attn.gate is not None:
            raise TypeError(f"only timm Block layers with plain Attention are exposed, got {type(layer).__name__}")
        q, k, v = fused_qkv(attn.qkv.weight, attn.qkv.bias, int(attn.num_heads), int(attn.head_dim),
                            attn.q_norm, attn.k_norm)
        return LayerParts(norm1=layer.norm1, q=q, k=k, v=v, out=nn.Sequential(attn.norm, attn.proj, attn.proj_drop),
                          norm2=layer.norm2, mlp=layer.mlp, num_heads=int(attn.num_heads),
                          head_dim=int(attn.head_dim), scale=float(attn.scale), attention_dropout=float(attn.attn_drop.p),
                          attention=attn, scale1=nn.Sequential(layer.ls1, layer.drop_path1),
                          scale2=nn.Sequential(layer.ls2, layer.drop_path2))

    def _pool(self, sequence: torch.Tensor, attention_mask: torch.Tensor,
              token_sizes: torch.Tensor | None) -> torch.Tensor:
        """``model.pool`` with padding and token sizes: ``[B, S, D]`` -> ``[B, D]`` (or ``[B, S, D]`` for no pool)."""
        model = self.model
        weight = attention_mask if token_sizes is None else token_sizes * attention_mask
        if not model.pool_include_prefix:
            sequence, weight = sequence[:, self.num_prefix_tokens:], weight[:, self.num_prefix_tokens:]
        if model.attn_pool is not None:
            from timm.layers import AttentionPoolLatent

            if type(model.attn_pool) is not AttentionPoolLatent or model.attn_pool.pos_embed is not None:
                raise TypeError(f"timm attention pooling {type(model.attn_pool).__name__} with position embeddings "
                                "or of another kind is not supported")
            bias = weight.clamp_min(1).to(torch.float32).log().masked_fill(weight == 0, float("-inf"))
            return model.attn_pool(sequence, attn_mask=bias[:, None, None, :].to(sequence.dtype))
        if not model.global_pool:
            return sequence
        return pool_tokens(sequence, weight, model.global_pool)

    def outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                token_sizes: torch.Tensor | None = None) -> Any:
        model = self.model
        sequence = model.norm(hidden)
        reads_prefix_only = model.attn_pool is None and model.global_pool == "token"
        if reads_prefix_only or hasattr(model, "head_dist"):  # the model's own head reads CLS (and dist) only
            return TimmOutput(logits=model.forward_head(sequence),
                              pooler_output=model.forward_head(sequence, pre_logits=True), last_hidden_state=sequence)
        pooled = model.head_drop(model.fc_norm(self._pool(sequence, attention_mask, token_sizes)))
        return TimmOutput(logits=model.head(pooled), pooler_output=pooled, last_hidden_state=sequence)
