"""Run an unmodified Hugging Face vision model on a tokenizer's output."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.masking_utils import (
    create_bidirectional_mask,
    packed_sequence_mask_function,
)

from ..tokenize.matching import count_token_sizes, token_attention_mask
from ..validate import check_pixel_values, check_tokens
from .attention import KERNELS, attention_kernel
from .base import EncoderAdapter, adapter_for
from .batching import (
    BATCHING,
    choose_batching,
    pack,
    plan_auto_buckets,
    plan_buckets,
    plan_packing,
    unpack,
)
from .layers import run_ragged_layers
from .linear import merged_linear_embedding
from .masks import (
    attention_bias,
    is_plain,
    padding_allowed,
    segment_allowed,
    sequence_mask,
    with_prefix_sizes,
)
from .merge import merge_tokens
from .ragged import ragged_layout

__all__ = ["VisualWordModel", "TokenSequence", "encode", "embed_tokens", "check_batch", "check_pixels", "run_layers"]


def check_pixels(adapter: EncoderAdapter, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> int:
    """Raise a clear error where images do not fit the model (or are not finite float pixels); return their
    number of patches. The checks on values run eagerly only: traced (torch.compile, ONNX export), a
    graph cannot branch on data, so only the shape checks are kept there."""
    if not torch.compiler.is_compiling():
        check_pixel_values(pixel_values)
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


def check_batch(adapter: EncoderAdapter, pixel_values: torch.Tensor, patch_to_token: torch.Tensor | None,
                interpolate_pos_encoding: bool = False, attention_mask: torch.Tensor | None = None,
                token_sizes: torch.Tensor | None = None) -> None:
    """Raise a clear error where a tokenized batch does not fit the model or is inconsistent
    (see :func:`vwt.validate.check_tokens`); ``patch_to_token`` ``None`` stands for every patch a token."""
    n = check_pixels(adapter, pixel_values, interpolate_pos_encoding)
    if patch_to_token is None:  # plain pixel values: every patch a token
        patch_to_token = torch.arange(n).expand(pixel_values.shape[0], -1)
    if not isinstance(patch_to_token, torch.Tensor):
        raise TypeError(f"patch_to_token must be a tensor, got {type(patch_to_token).__name__}")
    if patch_to_token.shape != (pixel_values.shape[0], n):  # shape[0], not len(): stays symbolic under export
        raise ValueError(
            f"patch_to_token has shape {tuple(patch_to_token.shape)} but the model cuts these images into "
            f"{len(pixel_values)} x {n} patches of {adapter.patch_size}px: was the tokenizer built for another "
            "patch size?"
        )
    if not torch.compiler.is_compiling():  # data-dependent checks: eager only (see check_pixels)
        check_tokens(patch_to_token, attention_mask, token_sizes)


def embed_tokens(adapter: EncoderAdapter, pixel_values: torch.Tensor, patch_to_token: torch.Tensor,
                 length: int, interpolate_pos_encoding: bool = False) -> torch.Tensor:
    """Patch embeddings plus positions, scatter-meaned into ``length`` tokens (the padded T), prefix tokens
    (CLS, registers) first.

    The batch is taken as valid: :func:`check_batch` is the caller's (``VisualWordModel.embed`` runs it
    once per forward).

    Returns:
        ``[B, P + T, D]``, P = ``adapter.num_prefix_tokens``.
    """
    linear = adapter.linear_patch_embedding(pixel_values, interpolate_pos_encoding)
    if linear is not None:  # merge pixel patches first, project T patches instead of N (vwt/encoders/linear.py)
        return merged_linear_embedding(linear, pixel_values, patch_to_token.to(pixel_values.device), length)
    embeddings = adapter.embed(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
    prefix = adapter.num_prefix_tokens
    tokens = merge_tokens(embeddings[:, prefix:], patch_to_token.to(embeddings.device), length)
    return torch.cat([embeddings[:, :prefix], tokens], dim=1)


def run_layers(layers: Sequence[Callable[..., torch.Tensor]], hidden: torch.Tensor,
               mask: torch.Tensor | None) -> torch.Tensor:
    """Every layer in turn on ``[B, S, D]`` with one 4-D attention mask (or None)."""
    for layer in layers:
        hidden = layer(hidden, mask)
    return hidden


@dataclass(frozen=True)
class TokenSequence:
    """A tokenized batch embedded for the layers: what :meth:`VisualWordModel.embed` returns."""

    hidden: torch.Tensor  # [B, S, D] merged tokens, prefix tokens first, after the model's pre-layer norm
    mask: torch.Tensor  # [B, S] 1 real, 0 padding
    sizes: torch.Tensor | None  # [B, S] patches per token (prefix 1, padding 0); None without proportional attention
    num_patches: int  # N, patches per image before merging


# Keys a tokenizer's batch carries that the model side does not need (``wrapped(**batch)`` ignores them).
TOKENIZER_EXTRAS = ("num_tokens", "word_ids")
_ATTENTION_WITH_FLOAT_MASKS = ("eager", "sdpa")


def _unwrap_compiled(model: nn.Module) -> tuple[nn.Module, Callable[..., Any] | None]:
    """A ``torch.compile``d module's original module, and a compiler with the same settings (or None)."""
    # torch.compile imports its wrapper class; where nothing imported it yet no module is compiled, and
    # importing torch._dynamo only to ask would cost seconds.
    dynamo = sys.modules.get("torch._dynamo.eval_frame")
    if dynamo is None or not isinstance(model, dynamo.OptimizedModule):
        return model, None
    return model._orig_mod, getattr(model, "dynamo_ctx", None) or torch.compile


class VisualWordModel(nn.Module):
    """An unmodified Hugging Face vision model that consumes a vwt tokenizer's output.

    Patch embeddings + position encodings are computed by the model's own embedding module,
    averaged into tokens by ``patch_to_token``, CLS kept first, then the model's own layers and
    norms run with an attention mask. Returns the model's usual output type
    (``last_hidden_state``/``pooler_output``, CLIP ``image_embeds`` and logits, ViT classification
    ``logits``, ...). The sequence is the model's P prefix tokens (CLS; registers and a distillation
    token in timm models; none in SigLIP), then the tokens: row ``P + t`` of ``last_hidden_state`` is
    token ``t``, padding where ``attention_mask[:, 1 + t]`` is 0.

    Size-aware attention (``proportional_attention=True``, the default): a token that stands for
    ``s`` patches gets ``log(s)`` added to the attention logits wherever it is a key, in every layer
    and in SigLIP's attention-pooling head (SigLIP's classifier mean is weighted by size), CLS size 1.
    The bias is an additive float mask (:func:`vwt.encoders.masks.attention_bias`), so the model needs
    ``attn_implementation`` ``"eager"`` or ``"sdpa"``. With nothing padded and every token one patch,
    no mask is passed at all (SDPA's fast path). ``False`` runs the paper's method: padding masks from
    ``transformers.masking_utils.create_bidirectional_mask``, every token weighed as one patch.

    An ``nn.Module`` holding the model as its submodule ``model``: ``.to()``, ``.eval()``, ``.half()``
    and ``state_dict()`` (the model's keys prefixed with ``model.``) pass through. A
    ``torch.compile``d model is accepted: the wrapper holds the original module and runs the layer
    stack through a function compiled with the same settings. ``torch.compile(wrapped)`` works too;
    it recompiles when the batch size or the padded token length changes (after the first change
    dynamo marks them dynamic). With a token budget every batch has the same length, so a fixed batch
    size never recompiles; ``"bucket"`` and ``"pack"`` plan on the host and break the graph.

    Args:
        model: a supported Hugging Face model (see :func:`vwt.encoders.supported_models`), or its
            ``torch.compile``d version.
        batching: how images of different token counts share a batch: ``"auto"`` (the default: one mode per
            batch, :func:`~vwt.encoders.batching.choose_batching`; its buckets on CPU planned by cost,
            :func:`~vwt.encoders.batching.plan_auto_buckets`), ``"pad"`` (pad to the longest), ``"bucket"``
            (groups of similar length run separately), ``"pack"`` (several images per sequence, block-diagonal
            attention) or ``"ragged"`` (real tokens only). All give each image its own result.
        num_buckets: groups per batch for ``"bucket"``.
        pack_capacity: tokens per packed sequence for ``"pack"`` (default: the unreduced length).
        proportional_attention: add ``log(size)`` of each key token to the attention logits; a float
            ``a >= 0`` adds ``a * log(size)`` (a token counts as ``size ** a`` patches, also in SigLIP's
            pooling); ``False`` or ``0`` is the paper.

    Example::

        batch = tokenizer(images)
        outputs = VisualWordModel(model)(**batch)  # or (batch); batching="auto"
    """

    def __init__(self, model: nn.Module, batching: str = "auto", num_buckets: int = 4,
                 pack_capacity: int | None = None, proportional_attention: bool | float = True,
                 attention_kernel: str = "auto") -> None:
        super().__init__()
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, got {batching!r}")
        if attention_kernel not in KERNELS:
            raise ValueError(f"attention_kernel must be one of {', '.join(KERNELS)}, got {attention_kernel!r}")
        original, compiler = _unwrap_compiled(model)
        self.adapter = adapter_for(original)
        self.model = self.adapter.model  # the submodule: .to(), .eval(), state_dict() reach it
        try:  # the pieces of each layer, for "ragged" (None: the adapter cannot drive its layers step by step)
            self._parts = tuple(self.adapter.layer_parts(layer) for layer in self.adapter.layers)
        except (TypeError, AttributeError):
            self._parts = None
        if batching == "ragged" and self._parts is None:
            raise ValueError(f"batching='ragged' drives each layer from its parts, which the adapter of "
                             f"{type(self.model).__name__} does not expose: use 'auto', 'pad', 'bucket' or 'pack'")
        self.batching = batching
        self.attention_kernel = attention_kernel
        self.num_buckets = num_buckets
        self.pack_capacity = pack_capacity
        strength = float(proportional_attention)
        if not (math.isfinite(strength) and strength >= 0):
            raise ValueError(f"proportional_attention must be a bool or a finite strength >= 0, "
                             f"got {proportional_attention!r}")
        self.proportional_attention = proportional_attention if isinstance(proportional_attention, bool) else strength
        self._size_exponent = strength
        self._run_layers = compiler(run_layers) if compiler is not None else run_layers
        attention = getattr(self.adapter.vision_config, "_attn_implementation", None)
        if self._size_exponent and attention not in (None, *_ATTENTION_WITH_FLOAT_MASKS):
            raise ValueError(
                f"proportional attention adds a float mask, which attn_implementation={attention!r} does not take: "
                "load the model with attn_implementation='sdpa' or 'eager', or pass proportional_attention=False"
            )

    def extra_repr(self) -> str:
        return f"batching={self.batching!r}, proportional_attention={self.proportional_attention}"

    # --- masks and layers ----------------------------------------------------------------------

    def _padded_layers(self, hidden: torch.Tensor, mask: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
        if sizes is None:  # the paper's method
            mask_4d = create_bidirectional_mask(config=self.adapter.vision_config, inputs_embeds=hidden,
                                                attention_mask=mask)
        else:
            mask_4d = None if is_plain(mask, sizes) else attention_bias(padding_allowed(mask), sizes, hidden.dtype)
        return self._run_layers(self.adapter.layers, hidden, mask_4d)

    def _packed_layers(self, hidden: torch.Tensor, mask: torch.Tensor, sizes: torch.Tensor | None,
                       num_patches: int) -> torch.Tensor:
        lengths = mask.sum(1)
        plan = plan_packing(lengths, self.pack_capacity or self.adapter.num_prefix_tokens + num_patches)
        packed, segment = pack(hidden, lengths, plan)
        if sizes is None:  # the paper's method
            mask_4d = create_bidirectional_mask(config=self.adapter.vision_config, inputs_embeds=packed,
                                                attention_mask=None,
                                                and_mask_function=packed_sequence_mask_function(segment))
        else:
            packed_sizes = pack(sizes.unsqueeze(-1).to(hidden.dtype), lengths, plan)[0].squeeze(-1)
            mask_4d = attention_bias(segment_allowed(segment), packed_sizes, hidden.dtype)
        return unpack(self._run_layers(self.adapter.layers, packed, mask_4d), lengths, plan, hidden.shape[1])

    def _ragged_layers(self, hidden: torch.Tensor, mask: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
        dropout = max((parts.attention_dropout for parts in self._parts if parts.attention.training), default=0.0)
        kernel = attention_kernel(self.attention_kernel, hidden.device, dropout)
        key_bias = None if sizes is None else sizes.clamp_min(1).to(torch.float32).log()
        return run_ragged_layers(self._parts, hidden, ragged_layout(mask), key_bias, kernel)

    def batching_for(self, lengths: torch.Tensor) -> tuple[str, int]:
        """The mode a batch of these ``[B]`` lengths (CLS included) runs, and its number of buckets:
        :attr:`batching` and :attr:`num_buckets`, or for ``"auto"`` what
        :func:`~vwt.encoders.batching.choose_batching` picks."""
        if self.batching != "auto":
            return self.batching, self.num_buckets
        return choose_batching(lengths, next(self.model.parameters()).device, ragged=self._parts is not None)

    def buckets_for(self, lengths: torch.Tensor, num_buckets: int) -> list[torch.Tensor]:
        """The groups ``"bucket"`` runs for these ``[B]`` lengths: under ``"auto"`` those of
        :func:`~vwt.encoders.batching.plan_auto_buckets` (planned by cost on CPU), else ``num_buckets`` groups
        of equal size (:func:`~vwt.encoders.batching.plan_buckets`)."""
        if self.batching == "auto":
            return plan_auto_buckets(lengths, next(self.model.parameters()).device, num_buckets)
        return plan_buckets(lengths, num_buckets)

    def _layers(self, tokens: TokenSequence) -> torch.Tensor:
        """The model's layers on the embedded tokens, batched as configured: ``[B, S, D]``."""
        hidden, mask, sizes = tokens.hidden, tokens.mask, tokens.sizes
        batching, num_buckets = self.batching_for(mask.sum(1))
        if batching == "ragged" and len(hidden) > 1:
            return self._ragged_layers(hidden, mask, sizes)
        if batching == "pack" and len(hidden) > 1:
            return self._packed_layers(hidden, mask, sizes, tokens.num_patches)
        if batching == "bucket" and len(hidden) > 1:
            out = torch.zeros_like(hidden)
            for index in self.buckets_for(mask.sum(1), num_buckets):
                width = int(mask[index].sum(1).max())
                out[index, :width] = self._padded_layers(hidden[index, :width], mask[index, :width],
                                                         None if sizes is None else sizes[index, :width])
            return out
        return self._padded_layers(hidden, mask, sizes)

    # --- the public steps ------------------------------------------------------------------------

    def embed(self, pixel_values: torch.Tensor, patch_to_token: torch.Tensor | None = None,
              attention_mask: torch.Tensor | None = None, token_sizes: torch.Tensor | None = None,
              interpolate_pos_encoding: bool = False) -> TokenSequence:
        """Merged token embeddings ready for the first layer, with their padding mask and sizes.

        Args:
            pixel_values: ``[B, C, H, W]``.
            patch_to_token: ``[B, N]`` (default: every patch its own token).
            attention_mask: ``[B, 1 + T]`` (default: derived from ``patch_to_token``).
            token_sizes: ``[B, T]`` patches per token (default: counted from ``patch_to_token``).
        """
        check_batch(self.adapter, pixel_values, patch_to_token, interpolate_pos_encoding, attention_mask, token_sizes)
        device = next(self.model.parameters()).device
        pixel_values = pixel_values.to(device)
        b, _, h, w = pixel_values.shape
        p = self.adapter.patch_size
        num_patches = (h // p) * (w // p)
        if patch_to_token is None:  # plain pixel values: every patch is a token
            patch_to_token = torch.arange(num_patches, device=device).expand(b, -1)
        patch_to_token = patch_to_token.to(device)
        if attention_mask is None:  # derive it: tokens are numbered 0..T_i-1 per image
            attention_mask = token_attention_mask(patch_to_token.max(dim=1).values + 1)
        attention_mask = attention_mask.to(device)
        length = attention_mask.shape[1] - 1
        hidden = embed_tokens(self.adapter, pixel_values, patch_to_token, length, interpolate_pos_encoding)
        mask = sequence_mask(attention_mask, self.adapter.num_prefix_tokens)
        sizes = None
        if self._size_exponent:
            sizes = count_token_sizes(patch_to_token, length) if token_sizes is None else token_sizes.to(device)
            if self._size_exponent != 1.0:  # counts as size ** a patches: a * log(size) on the logits
                sizes = sizes.to(torch.float32) ** self._size_exponent
            sizes = with_prefix_sizes(sizes, self.adapter.num_prefix_tokens)
        return TokenSequence(self.adapter.before_layers(hidden), mask, sizes, num_patches)

    def forward(self, pixel_values: Any = None, patch_to_token: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, token_sizes: torch.Tensor | None = None, *,
                interpolate_pos_encoding: bool = False, **head_kwargs: Any) -> Any:
        """Run the model on a tokenized batch: ``wrapped(**batch)`` or ``wrapped(batch)``.

        Args:
            pixel_values: ``[B, C, H, W]``, or a whole tokenizer batch (a mapping).
            patch_to_token: ``[B, N]`` int64, the token of each patch, -1 if dropped.
            attention_mask: ``[B, 1 + T]``, 1 for CLS and real tokens, 0 for padding.
            token_sizes: ``[B, T]`` patches per token.
            head_kwargs: for the family's head, e.g. ``input_ids`` for CLIP zero-shot logits; the
                tokenizer's ``num_tokens`` and ``word_ids`` are ignored.
        """
        tokens = self.embed(*_inputs(pixel_values, patch_to_token, attention_mask, token_sizes, head_kwargs),
                            interpolate_pos_encoding=interpolate_pos_encoding)
        return self.adapter.outputs(self._layers(tokens), tokens.mask, token_sizes=tokens.sizes, **head_kwargs)

    def hidden_states(self, *args: Any, interpolate_pos_encoding: bool = False,
                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer hidden states ``[B, S, D]`` (before the final norm) and the padding mask ``[B, S]``.

        Takes the batch as :meth:`forward` does.
        """
        tokens = self.embed(*_inputs(*args, **_named(kwargs), head_kwargs=kwargs),
                            interpolate_pos_encoding=interpolate_pos_encoding)
        return self._layers(tokens), tokens.mask

    @torch.no_grad()
    def generate(self, *args: Any, interpolate_pos_encoding: bool = False, **kwargs: Any) -> Any:
        """Generate text from a tokenized batch (e.g. BLIP captions), the image padding mask included.

        Takes the batch as :meth:`forward` does; other keyword arguments go to the family's
        ``generate`` (``input_ids``, ``max_new_tokens``, ...).
        """
        generate = getattr(self.adapter, "generate", None)
        if generate is None:
            raise TypeError(f"{type(self.model).__name__} does not generate text (its adapter has no generate)")
        tokens = self.embed(*_inputs(*args, **_named(kwargs), head_kwargs=kwargs),
                            interpolate_pos_encoding=interpolate_pos_encoding)
        return generate(self._layers(tokens), tokens.mask, **kwargs)


_INPUTS = ("pixel_values", "patch_to_token", "attention_mask", "token_sizes")


def _named(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the model-side inputs out of ``kwargs``."""
    return {name: kwargs.pop(name) for name in _INPUTS if name in kwargs}


def _inputs(pixel_values: Any = None, patch_to_token: Any = None, attention_mask: Any = None,
            token_sizes: Any = None, head_kwargs: dict[str, Any] | None = None) -> tuple[Any, Any, Any, Any]:
    """``(pixel_values, patch_to_token, attention_mask, token_sizes)`` from arguments or a batch mapping.

    A mapping in ``pixel_values`` is a whole tokenizer batch; arguments given explicitly win over its
    keys. The tokenizer's extra keys are dropped from ``head_kwargs`` (in place).
    """
    for name in TOKENIZER_EXTRAS:
        (head_kwargs or {}).pop(name, None)
    given = (pixel_values, patch_to_token, attention_mask, token_sizes)
    if isinstance(pixel_values, Mapping):
        batch = pixel_values
        given = tuple(batch.get(name) if value is None else value
                      for name, value in zip(_INPUTS, (None, *given[1:])))
    if given[0] is None:
        raise ValueError("the batch has no pixel_values")
    return given


def encode(model: nn.Module, batch: Mapping[str, Any], **kwargs: Any) -> Any:
    """Shorthand for ``VisualWordModel(model)(batch, **kwargs)`` (``batching="auto"``)."""
    return VisualWordModel(model)(batch, **kwargs)
