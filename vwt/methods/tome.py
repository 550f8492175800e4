"""Token Merging (ToMe; Bolya et al., ICLR 2023) on an unmodified Hugging Face vision model.

Every layer runs its own submodules, driven from here: pre-attention norm, attention computed from the
layer's q/k/v projections with proportional attention (``log(size)`` of each key added to the logits),
output projection and residual; then bipartite soft matching on the attention keys (mean over heads)
merges ``r`` tokens by size-weighted average (:mod:`vwt.methods.bipartite`); then the MLP half of the
layer. Nothing on the model is swapped, copied or stored. A fractional ``r`` or a ``similarity`` threshold
merges a different count in each image (:mod:`vwt.methods.adaptive`), so a batch of equal-length images may
come out padded.

Token order after a merge (deterministic): the unmerged tokens of set A (even positions) in their
previous order, then every token of set B (odd positions) in its previous order. Protected prefix
tokens (CLS; registers and a distillation token in timm models) are never merged and stay first in
their order: a protected token in B is put back among them (as ToMe's timm patch does for DeiT's
distillation token).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._lazy import renamed_attributes
from ..encoders.attention import KERNELS, sized_attention
from ..encoders.base import LayerParts, adapter_for
from ..encoders.layers import attention_block, mlp_block
from ..encoders.run import check_pixels
from .adaptive import adaptive_soft_matching
from .bipartite import bipartite_soft_matching, merge_source, merge_wavg, padding_last
from .result import MethodResult

__all__ = ["ToMe", "ToMeConfig", "attend_proportionally", "schedule_r", "token_counts"]


# ---------------------------------------------------------------------------------------- pure math
def attend_proportionally(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, size: torch.Tensor | None,
                          scale: float, dropout_p: float = 0.0, kernel: str = "auto") -> torch.Tensor:
    """``softmax(q kᵀ · scale + log size_key) v``, through :func:`vwt.encoders.attention.sized_attention`
    (``kernel="auto"``: FlexAttention with ``log(size)`` as a ``score_mod`` on CUDA, SDPA with it as a float
    bias on CPU; ``"flex"`` or ``"sdpa"`` forces one).

    Args:
        q: ``[B, H, N, d]``, and so are ``k`` and ``v``.
        size: ``[B, N, 1]`` or None (plain attention).

    Returns:
        ``[B, H, N, d]``.
    """
    bias = None if size is None else size[..., 0].float().log()  # [B, N]; size 0 (padding): -inf
    return sized_attention(q, k, v, bias, scale, dropout_p, kernel)


def schedule_r(r: int | float | Sequence[int], num_layers: int, schedule: str = "constant",
               inflect: float = -0.5) -> list[int] | list[float]:
    """Tokens to merge in each layer, as the ToMe repository's ``parse_r``.

    ``"constant"``: ``r`` every layer (a fractional ``r`` too). ``"decrease"``: linear from
    ``int(r·(1 - inflect))`` down to ``2r - int(r·(1 - inflect))`` (about the same total as constant).
    A list is padded with zeros.
    """
    if isinstance(r, float):
        return [r] * num_layers
    if not isinstance(r, int):
        if len(r) > num_layers:
            raise ValueError(f"r lists {len(r)} layers but the model has {num_layers}")
        return list(r) + [0] * (num_layers - len(r))
    if schedule == "constant":
        return [r] * num_layers
    first = int(r * (1.0 - inflect))
    step = (2 * r - 2 * first) / (num_layers - 1) if num_layers > 1 else 0.0
    return [int(first + step * i) for i in range(num_layers)]


def token_counts(length: int, rs: Sequence[int], protect_cls: bool = True) -> list[int]:
    """Sequence length entering each layer plus the final one, from ``length`` (CLS included) entering the
    first, with each ``r`` capped at half the mergeable tokens."""
    counts = [length]
    for r in rs:
        counts.append(counts[-1] - min(r, (counts[-1] - int(protect_cls)) // 2))
    return counts


# ---------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ToMeConfig:
    """What ToMe does; the same object serializes with ``dataclasses.asdict``."""

    #: Tokens merged per layer: one int for every layer, or one per layer (missing trailing layers merge 0);
    #: or a float in [0, 0.5): the share of each image's mergeable tokens it merges in each layer, rounded
    #: half up per image (:func:`vwt.methods.adaptive.fraction_counts`).
    r: int | float | tuple[int, ...] = 0
    #: "constant" (r every layer) or "decrease" (ToMe's parse_r schedule; needs an int r).
    schedule: str = "constant"
    #: Only for schedule="decrease": ToMe's inflection in [-1, 0); -0.5 runs from 1.5·r down to 0.5·r.
    inflect: float = -0.5
    #: Add log(size) of each key to the attention logits, so a merged token counts as its patches.
    proportional_attention: bool = True
    #: Never merge the prefix tokens: CLS, registers, a distillation token (ignored by models without any).
    protect_cls: bool = True
    #: Instead of ``r``: in each layer, merge every A-to-B edge whose key cosine is above this, in [-1, 1]
    #: (at most half of each image's mergeable tokens).
    similarity: float | None = None
    #: The attention kernel (:func:`vwt.encoders.attention.attention_kernel`): "auto" (FlexAttention on CUDA, SDPA
    #: with a float bias elsewhere), "flex" or "sdpa"; the same result, to compare their speed.
    attention_kernel: str = "auto"

    @property
    def adaptive(self) -> bool:
        """Whether images merge different counts (a fractional ``r`` or a ``similarity``)."""
        return isinstance(self.r, float) or self.similarity is not None

    def __post_init__(self) -> None:
        if self.attention_kernel not in KERNELS:
            raise ValueError(f"attention_kernel must be one of {', '.join(KERNELS)}, got {self.attention_kernel!r}")
        if self.similarity is not None:
            if isinstance(self.similarity, bool) or not isinstance(self.similarity, (int, float)) \
                    or not -1.0 <= self.similarity <= 1.0:
                raise ValueError(f"similarity must be a cosine in [-1, 1], got {self.similarity!r}")
            if self.r != 0:
                raise ValueError(f"give r or similarity, not both (r={self.r!r}, similarity={self.similarity})")
            object.__setattr__(self, "similarity", float(self.similarity))
        if self.adaptive and not self.proportional_attention:
            raise ValueError("an adaptive r pads the batch and the sizes keep padding out of attention: "
                             "proportional_attention must stay on")
        if isinstance(self.r, float):
            if not 0.0 <= self.r < 0.5:
                raise ValueError(f"a fractional r must be in [0, 0.5), got {self.r}")
            if self.schedule != "constant":
                raise ValueError("a fractional r merges the same share in every layer: schedule must be 'constant'")
            return
        r = self.r
        if isinstance(r, Sequence) and not isinstance(r, str):
            r = tuple(r)
            object.__setattr__(self, "r", r)
        values = r if isinstance(r, tuple) else (r,)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise TypeError(f"r must be an int, a float in [0, 0.5) or a sequence of ints, got {self.r!r}")
        if any(v < 0 for v in values):
            raise ValueError(f"r must be >= 0 in every layer, got {self.r!r}")
        if self.schedule not in ("constant", "decrease"):
            raise ValueError(f"schedule must be 'constant' or 'decrease', got {self.schedule!r}")
        if self.schedule == "decrease" and isinstance(r, tuple):
            raise ValueError("schedule='decrease' needs an int r; a per-layer list is its own schedule")
        if self.schedule == "decrease" and not -1.0 <= self.inflect < 0.0:
            raise ValueError(f"inflect must be in [-1, 0) for a decreasing schedule, got {self.inflect}")


# ---------------------------------------------------------------------------------------- layer
def tome_layer(parts: LayerParts, x: torch.Tensor, size: torch.Tensor, source: torch.Tensor | None, r: int | float, *,
               protect_cls: int, proportional: bool, similarity: float | None = None, kernel: str = "auto"
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One layer: attention -> merge -> MLP. ``x [B, N, D]``, ``size [B, N, 1]``, ``source [B, N, S0]``.

    An int ``r`` merges ``r`` tokens of every image; a float ``r`` (a share) or a ``similarity`` merges a
    count per image and returns the batch padded, padding last (:func:`~vwt.methods.adaptive.adaptive_soft_matching`).
    """
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout_p: float) -> torch.Tensor:
        return attend_proportionally(q, k, v, size if proportional else None, scale, dropout_p, kernel)

    x, k = attention_block(parts, x, attend)
    if similarity is not None or (isinstance(r, float) and r > 0):
        merge, _ = adaptive_soft_matching(k.mean(dim=1), fraction=None if similarity is not None else r,
                                          similarity=similarity, protect_cls=protect_cls, valid=size[..., 0] > 0)
        source = None if source is None else merge_source(merge, source)
        x, size = merge_wavg(merge, x, size)
    elif r > 0:
        merge, _ = bipartite_soft_matching(k.mean(dim=1), r, protect_cls, size[..., 0] > 0)
        source = None if source is None else merge_source(merge, source)
        x, size = merge_wavg(merge, x, size)
    return mlp_block(parts, x), size, source


# ---------------------------------------------------------------------------------------- shell
class ToMe:
    """Run a Hugging Face vision model with Token Merging; the model itself is left untouched.

    A call returns a :class:`~vwt.methods.result.MethodResult`: the model's usual ``outputs``,
    ``tokens_per_layer`` (tokens entering each layer), ``token_sizes`` ``[B, T]`` (patches, plus CLS, in
    each final token) and, with ``trace_source=True``, ``source`` ``[B, T, N]``. Nothing of a call is
    kept on the object.

    Example::

        result = ToMe(model, r=13)(pixel_values)
        result.outputs.pooler_output, result.tokens_per_layer
    """

    def __init__(self, model: nn.Module, r: int | float | Sequence[int] | None = None, *,
                 config: ToMeConfig | None = None, trace_source: bool = False, **options: Any) -> None:
        if (config is None) == (r is None and options.get("similarity") is None):
            raise ValueError("give either r or similarity (with schedule/inflect/... options) or config=ToMeConfig(...)")
        if config is not None and options:
            raise ValueError(f"options {sorted(options)} conflict with config; put them in the ToMeConfig")
        self.config = config if config is not None else ToMeConfig(0 if r is None else r, **options)
        self.adapter = adapter_for(model)
        self.model = self.adapter.model
        try:
            self._parts = [self.adapter.layer_parts(layer) for layer in self.adapter.layers]
        except (TypeError, AttributeError) as error:
            raise TypeError(f"ToMe cannot drive {type(self.model).__name__}: {error}") from None
        self.trace_source = trace_source
        self.r_per_layer = schedule_r(self.config.r, len(self._parts), self.config.schedule, self.config.inflect)
        h, w = self.adapter.image_size
        self._check_total((h // self.adapter.patch_size) * (w // self.adapter.patch_size))

    def __repr__(self) -> str:
        return f"ToMe({type(self.model).__name__}, {self.config})"

    @property
    def protect_cls(self) -> int:
        """How many leading tokens are never merged: the model's prefix tokens, or 0 with ``protect_cls=False``."""
        return self.adapter.num_prefix_tokens if self.config.protect_cls else 0

    def _check_total(self, num_patches: int) -> None:
        if not self.config.adaptive and sum(self.r_per_layer) >= num_patches:
            raise ValueError(
                f"r merges {sum(self.r_per_layer)} tokens in total ({self.r_per_layer}) but an image has "
                f"{num_patches} patches; at most {num_patches - 1} merges leave one patch token"
            )

    def run_layers(self, x: torch.Tensor, size: torch.Tensor | None = None, source: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[int]]:
        """The model's layers with ToMe from hidden states that may already be merged.

        Args:
            x: ``[B, N, D]`` after the model's pre-layer step.
            size: ``[B, N, 1]`` patches per token (ones when None: nothing merged yet); 0 marks padding
                (at the end of each row): never attended to, never merged into, kept last.
            source: ``[B, N, S0]`` 0/1 patches per token, to trace; or None.

        Returns:
            ``(x [B, T, D], size [B, T, 1], source [B, T, S0] or None, tokens entering each layer)``.
        """
        merged = size is not None and bool((size != 1).any())
        padded = size is not None and bool((size == 0).any())
        size = x.new_ones(*x.shape[:2], 1) if size is None else size.to(x.dtype)
        adaptive, similarity = self.config.adaptive, self.config.similarity
        counts = []
        for parts, r in zip(self._parts, self.r_per_layer):
            counts.append(x.shape[1])
            # until the first merge every size is 1: plain attention (an adaptive merge may pad a batch
            # without shortening it; its padding, size 0, needs the sizes to stay invisible)
            merged = merged or x.shape[1] < counts[0] or (adaptive and len(counts) > 1 and bool((size != 1).any()))
            x, size, source = tome_layer(parts, x, size, source, r, protect_cls=self.protect_cls,
                                         proportional=self.config.proportional_attention and merged,
                                         similarity=similarity, kernel=self.config.attention_kernel)
            if padded and not adaptive and r > 0:  # an adaptive merge puts padding last itself
                x, size, source = padding_last(x, size, source)
        return x, size, source, counts

    def __call__(self, pixel_values: torch.Tensor | Mapping[str, Any], *, interpolate_pos_encoding: bool = False,
                 **kwargs: Any) -> MethodResult:
        """ToMe on ``pixel_values [B, C, H, W]`` (or a batch holding them).

        Extra keyword arguments go to the family's head, e.g. ``input_ids`` for CLIP zero-shot logits.
        """
        if isinstance(pixel_values, Mapping):
            pixel_values = pixel_values["pixel_values"]
        device = next(self.model.parameters()).device
        pixel_values = pixel_values.to(device)
        num_patches = check_pixels(self.adapter, pixel_values, interpolate_pos_encoding)
        b = len(pixel_values)
        self._check_total(num_patches)
        x = self.adapter.before_layers(self.adapter.embed(pixel_values, interpolate_pos_encoding))
        source = torch.eye(x.shape[1], device=device, dtype=x.dtype).expand(b, -1, -1) if self.trace_source else None
        x, size, source, counts = self.run_layers(x, None, source)
        prefix = self.adapter.num_prefix_tokens
        mask = (size[..., 0] > 0).long()  # an adaptive merge pads a batch
        return MethodResult(
            outputs=self.adapter.outputs(x, mask, **kwargs),
            tokens_per_layer=tuple(counts),
            sequence_lengths=torch.full((b,), counts[0], dtype=torch.long),
            token_sizes=size[..., 0].round().long(),
            source=None if source is None else source[..., prefix:].round().to(torch.uint8),
        )


#: Old names: ``proportional_attention`` is the setting (:class:`ToMeConfig`), the function attends.
__getattr__ = renamed_attributes(__name__, {"proportional_attention": "attend_proportionally"}, globals())
