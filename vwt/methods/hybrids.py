"""Hybrid methods: visual words at the input, ToMe's merging inside the layers.

``vwt+tome``: the visual-word tokenizer merges patches before the first layer (their sizes carried
along), then ToMe's bipartite soft matching removes ``r`` tokens in each layer, with the sizes from
the tokenizer in its proportional attention and size-weighted merges. A padded batch (a threshold
gives images different token counts) keeps its padding at size 0: invisible as a key (log 0 added to
the logits), never a merge target. With ``r=0`` this is ``vwt``; with ``threshold=-1`` (nothing
merged at the input) it is ``tome``.

With a threshold at the input, use a fractional ``r`` (a share of each image's tokens, e.g. ``r=0.1``)
or ``similarity=``: then every stage is adaptive, and an image the words already shrank loses only its
share in each layer, where a fixed ``r`` would remove the same count from every image.

Batching (``batching=``): ``"pad"`` runs the whole batch padded to its longest image; ``"bucket"`` sorts
the images by token count and runs groups of similar length separately
(:func:`~vwt.encoders.batching.plan_buckets`), each padded to its own longest; ``"auto"`` (the default)
picks per batch with :func:`~vwt.encoders.batching.choose_batching` (one dense batch for equal lengths,
except more than 12 images on CPU; buckets for variable ones). On CPU ``"auto"`` forms its buckets as every
method does (:func:`~vwt.encoders.batching.plan_auto_buckets`): runs of similar length that minimise the
padded tokens plus a fixed cost a group (at most 12 images), which ran about 3% faster than groups of 4 at
batch 32 (``scripts/bench_latency.py --batch 32``). ToMe pairs tokens by position within each image, so
``"pack"`` and ``"ragged"`` do not apply. Every mode gives each image the result it gets alone.

Use it through :func:`vwt.methods.load`::

    runner = vwt.methods.load("vwt+tome", vocab="vocabularies/dinov2-p14-k1000", threshold=0.02,
                              connected=True, r=8).bind(model)
    result = runner(pixel_values)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..encoders import VisualWordModel
from ..encoders.batching import choose_batching
from ..encoders.run import TokenSequence
from .result import MethodResult

__all__ = ["VwtTome", "bind_vwt_tome", "run_in_buckets"]

HYBRID_BATCHING = ("auto", "pad", "bucket")
"""The batching modes of ``vwt+tome`` (see the module notes)."""

Layers = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, list[int]]]


def run_in_buckets(layers: Layers, hidden: torch.Tensor, sizes: torch.Tensor, lengths: torch.Tensor,
                   buckets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Run ``layers`` on groups of images, each padded to its own longest, and pad the results together.

    Args:
        layers: ``(x [b, S, D], sizes [b, S, 1]) -> (x [b, T, D], sizes [b, T, 1], sequence length entering
            each layer)``, padding (size 0) last in each row.
        hidden: ``[B, S, D]`` the embedded batch, real tokens first; sizes: ``[B, S, 1]`` (0: padding).
        lengths: ``[B]`` real tokens per image; buckets: index tensors into the batch
            (:func:`~vwt.encoders.batching.plan_buckets`).

    Returns:
        ``(x [B, T, D], sizes [B, T, 1], mean sequence length per image entering each layer)``, ``T`` the
        longest final length over the buckets, padding (size 0, zero) behind each image's tokens.
    """
    widths = [int(lengths[index].max()) for index in buckets]  # a few host syncs per batch: the plan
    runs = [layers(hidden[index, :width], sizes[index, :width]) for index, width in zip(buckets, widths)]
    longest = max(x.shape[1] for x, _, _ in runs)
    x_out = hidden.new_zeros(len(hidden), longest, hidden.shape[-1])
    size_out = sizes.new_zeros(len(hidden), longest, 1)
    counts = [0.0] * len(runs[0][2])
    for index, (x, size, bucket_counts) in zip(buckets, runs):
        x_out[index, : x.shape[1]] = x
        size_out[index, : x.shape[1]] = size
        counts = [total + len(index) * c for total, c in zip(counts, bucket_counts)]
    return x_out, size_out, [total / len(hidden) for total in counts]


def bind_vwt_tome(model: nn.Module, *, vocab: Any = None, threshold: float | None = None,
                  max_tokens: int | None = None, keep: float | None = None, connected: bool | None = None,
                  window: int | None = None, norm_band: float | None = None, min_keep: float | None = None,
                  r: int | float | Sequence[int] = 0,
                  batching: str = "auto", num_buckets: int = 4,
                  **tome_options: Any) -> VwtTome:
    """Bind ``vwt+tome`` to ``model``: a :class:`VwtTome`, a function of ``pixel_values`` ``[B, C, H, W]``.

    Args:
        model: a model ToMe supports (CLIP, ViT, DINOv2, SigLIP).
        vocab: the visual-word tokenizer's vocabulary, with ``threshold``, ``max_tokens``, ``keep``,
            ``connected``, ``window``, ``norm_band`` and ``min_keep`` (see :func:`vwt.methods.visual_word_tokenizer`).
        r: ToMe's tokens merged per layer (an int or one per layer), or the share of each image's tokens
            merged in each layer (a float in [0, 0.5)).
        batching: ``"auto"`` (the default), ``"pad"`` or ``"bucket"`` (see the module notes).
        num_buckets: groups per batch for ``"bucket"`` (``"auto"`` plans its own groups).
        tome_options: the rest of :class:`vwt.methods.tome.ToMeConfig` (``schedule``, ``inflect``,
            ``similarity``).
    """
    from .tome import ToMe
    from .tokenizers import visual_word_tokenizer

    if batching not in HYBRID_BATCHING:
        raise ValueError(f"vwt+tome batching must be one of {', '.join(HYBRID_BATCHING)}, got {batching!r} "
                         "(ToMe pairs tokens by position within each image: no packing, no ragged batch)")
    tokenizer = visual_word_tokenizer(model, vocab, threshold, max_tokens, keep, connected, window, norm_band,
                                      min_keep)
    tome = ToMe(model, r=r, **tome_options)
    if not tome.config.proportional_attention:
        raise ValueError("vwt+tome carries the tokenizer's sizes into ToMe: proportional_attention must stay on")
    return VwtTome(tokenizer, tome, batching, num_buckets)


class VwtTome:
    """``vwt+tome`` bound to a model (made by :func:`bind_vwt_tome`): call it on ``pixel_values`` ``[B, C, H, W]``
    for a :class:`~vwt.methods.result.MethodResult`.

    A call runs four stages, each a method, so that a benchmark can time them apart
    (``scripts/bench_latency.py --breakdown``): :meth:`tokenize`, :meth:`embed`, :meth:`plan` and
    :meth:`run_layers`, then the model's head.
    """

    def __init__(self, tokenizer: Any, tome: Any, batching: str = "auto", num_buckets: int = 4) -> None:
        self.tokenizer, self.tome = tokenizer, tome
        # proportional attention: the sizes come with the embedded tokens; its batching plans the buckets
        self.wrapped = VisualWordModel(tome.model, batching=batching, num_buckets=num_buckets)
        self.device = next(self.wrapped.model.parameters()).device

    def tokenize(self, pixel_values: torch.Tensor) -> Any:
        """The visual-word tokenizer's batch (``pixel_values``, ``patch_to_token``, ``attention_mask``, ...)."""
        return self.tokenizer(pixel_values=pixel_values)

    def embed(self, batch: Any) -> TokenSequence:
        """The merged tokens, embedded, with their sizes (:meth:`vwt.encoders.VisualWordModel.embed`)."""
        return self.wrapped.embed(batch["pixel_values"], batch["patch_to_token"], batch["attention_mask"],
                                  batch["token_sizes"])

    def plan(self, lengths: torch.Tensor) -> list[torch.Tensor] | None:
        """The groups of images the layers run in, or None for one batch (see the module notes).

        Args:
            lengths: ``[B]`` real tokens per image (CLS included).
        """
        mode, buckets = self.wrapped.batching, self.wrapped.num_buckets
        if mode == "auto":  # ToMe pairs tokens by position within each image: never ragged
            mode, buckets = choose_batching(lengths, self.device, ragged=False)
        if mode != "bucket" or len(lengths) == 1:
            return None
        return self.wrapped.buckets_for(lengths, buckets)

    def run_layers(self, tokens: TokenSequence, plan: Sequence[torch.Tensor] | None
                   ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
        """ToMe's layers on the embedded tokens, in ``plan``'s groups: ``(x [B, T, D], sizes [B, T, 1], mean
        sequence length entering each layer)`` (:func:`run_in_buckets`)."""
        lengths, sizes = tokens.mask.sum(1), tokens.sizes.unsqueeze(-1).to(tokens.hidden.dtype)
        if plan is None:
            return self._layers(tokens.hidden, sizes)
        return run_in_buckets(self._layers, tokens.hidden, sizes, lengths, plan)

    def _layers(self, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        x, size, _, counts = self.tome.run_layers(x, size)
        return x, size, counts

    def __call__(self, pixel_values: torch.Tensor) -> MethodResult:
        tokens = self.embed(self.tokenize(pixel_values))
        lengths = tokens.mask.sum(1)
        x, size, counts = self.run_layers(tokens, self.plan(lengths))
        sizes = size[..., 0]
        outputs = self.wrapped.adapter.outputs(x, (sizes > 0).long(), token_sizes=sizes)
        return MethodResult(outputs=outputs, tokens_per_layer=tuple(counts), sequence_lengths=lengths,
                            token_sizes=sizes.round().long())
