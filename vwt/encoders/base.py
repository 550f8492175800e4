"""The adapter interface: the only place that knows a model family's attribute names."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig

from .linear import LinearPatchEmbedding

__all__ = ["EncoderAdapter", "LayerParts", "register_adapter", "adapter_for", "supported_models"]

_ADAPTERS: list[type[EncoderAdapter]] = []


@dataclass(frozen=True)
class LayerParts:
    """The pieces of one pre-norm transformer layer, for methods that run a layer step by step (ToMe).

    The layer computes ``x + drop(scale1(out(attention(q, k, v))))`` on ``norm1(x)``, then
    ``x + drop(scale2(mlp(norm2(x))))``; ``q``, ``k``, ``v`` map ``[B, N, D]`` to ``[B, N, H * head_dim]``.
    """

    norm1: nn.Module
    q: nn.Module
    k: nn.Module
    v: nn.Module
    out: nn.Module
    norm2: nn.Module
    mlp: nn.Module
    num_heads: int
    head_dim: int
    #: The attention logit scale (``head_dim ** -0.5`` in every supported family).
    scale: float
    #: Attention-probability dropout, applied in training mode only.
    attention_dropout: float
    #: The module whose ``training`` flag decides whether attention dropout applies.
    attention: nn.Module
    #: Layer scale of the attention and MLP branches (DINOv2), or None.
    scale1: nn.Module | None = None
    scale2: nn.Module | None = None
    #: Dropout / drop-path on both residual branches, or None.
    residual_dropout: nn.Module | None = None


class EncoderAdapter(ABC):
    """Drives an unmodified Hugging Face vision model's submodules, one family per subclass.

    The generic runner (:class:`vwt.encoders.VisualWordModel`) calls, in order: :meth:`embed`,
    (merging), :meth:`before_layers`, every module of :attr:`layers` with the 4D attention mask,
    then :meth:`outputs`. Subclasses only name the submodules.
    """

    #: The Hugging Face model classes this adapter handles (subclasses included).
    model_classes: ClassVar[tuple[type[nn.Module], ...]] = ()
    #: Names of the classes handled without importing their library (timm, open_clip), for the listing.
    described_models: ClassVar[tuple[str, ...]] = ()

    @property
    def num_prefix_tokens(self) -> int:
        """Leading tokens that are never merged and stay first (CLS, registers, a distillation token): P.

        1 (CLS) unless a family says otherwise; 0 for a model without CLS (SigLIP).
        """
        return 1

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @classmethod
    def handles(cls, model: nn.Module) -> bool:
        """Whether this adapter drives ``model``."""
        return isinstance(model, cls.model_classes)

    @property
    @abstractmethod
    def vision(self) -> nn.Module:
        """The vision tower (the module holding embeddings and layers)."""

    @property
    def vision_config(self) -> PretrainedConfig:
        """The vision tower's config (hidden size, patch size, image size, attention implementation)."""
        return self.vision.config

    @property
    def patch_size(self) -> int:
        size = self.vision_config.patch_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.vision_config.image_size
        return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))

    @property
    def num_channels(self) -> int:
        return int(getattr(self.vision_config, "num_channels", 3))

    #: Whether the model interpolates its position encodings for any image size by itself.
    interpolates_positions: ClassVar[bool] = False

    @property
    def needs_text_inputs(self) -> bool:
        """Whether the model's own ``forward`` needs text inputs besides the pixels (a two-tower model such
        as ``CLIPModel``, a captioner): its image path then runs through this adapter. False unless a
        family says otherwise."""
        return False

    #: Whether the model's own ``forward`` takes ``pixel_values=`` and returns its usual output object (the
    #: Hugging Face families); False runs the unmodified model's image path through this adapter too.
    forward_takes_pixel_values: ClassVar[bool] = True

    @abstractmethod
    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Patch embeddings with position encodings added, prefix tokens first: ``[B, P + N, D]``."""

    def linear_patch_embedding(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
                               ) -> LinearPatchEmbedding | None:
        """The embedding as an affine map per patch, so pixel patches can be merged before it; None where
        the family's embedding is not that (then :meth:`embed` runs on every patch and tokens are merged
        afterwards). Must describe exactly what :meth:`embed` computes for these ``pixel_values``."""
        return None

    def before_layers(self, hidden: torch.Tensor) -> torch.Tensor:
        """What the model applies between embeddings and the first layer (e.g. CLIP's pre-layernorm)."""
        return hidden

    @property
    @abstractmethod
    def layers(self) -> Sequence[Callable[[torch.Tensor, Any], torch.Tensor]]:
        """The transformer layers (usually the model's ``nn.ModuleList``), each called as
        ``layer(hidden, attention_mask_4d) -> hidden``."""

    def layer_parts(self, layer: nn.Module) -> LayerParts:
        """The pieces of one module of :attr:`layers`, for methods that drive a layer step by step."""
        raise TypeError(f"{type(self).__name__} does not expose the pieces of {type(layer).__name__} layers")

    @abstractmethod
    def outputs(self, hidden: torch.Tensor, attention_mask: torch.Tensor, token_sizes: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        """The model's usual output object from the last layer's hidden states ``[B, S, D]``.

        ``attention_mask`` is the 2D ``[B, S]`` padding mask (1 real, 0 padding); ``token_sizes``
        ``[B, S]`` the patches per token for size-aware pooling (None: every token one patch). A family's
        head inputs (CLIP's ``input_ids``, ...) are keyword arguments of its own ``outputs``; an argument
        the family does not take is Python's ``TypeError``.
        """


def register_adapter(cls: type[EncoderAdapter]) -> type[EncoderAdapter]:
    """Class decorator adding an adapter to the registry searched by :func:`adapter_for`."""
    _ADAPTERS.append(cls)
    return cls


def supported_models() -> list[str]:
    """Names of the supported model classes (Hugging Face, then timm and open_clip by their module path)."""
    return sorted(model_class.__name__ for cls in _ADAPTERS for model_class in cls.model_classes) + sorted(
        name for cls in _ADAPTERS for name in cls.described_models)


def adapter_for(model: nn.Module) -> EncoderAdapter:
    """The adapter for ``model``; a clear error for an unsupported model class."""
    if isinstance(model, EncoderAdapter):
        return model
    for cls in _ADAPTERS:
        if cls.handles(model):
            return cls(model)
    raise TypeError(
        f"unsupported model class {type(model).__name__}; supported: {', '.join(supported_models())}"
    )
