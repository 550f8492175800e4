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
from .result import MethodResult

__all__ = ["bind_vwt_tome"]


def bind_vwt_tome(model: nn.Module, *, vocab: Any = None, threshold: float | None = None,
                  max_tokens: int | None = None, keep: float | None = None, connected: bool | None = None,
                  r: int | float | Sequence[int] = 0, **tome_options: Any) -> Callable[[torch.Tensor], MethodResult]:
    """Bind ``vwt+tome`` to ``model``: a function of ``pixel_values`` ``[B, C, H, W]``.

    Args:
        model: a model ToMe supports (CLIP, ViT, DINOv2, SigLIP).
        vocab: the visual-word tokenizer's vocabulary, with ``threshold``, ``max_tokens``, ``keep`` and
            ``connected`` (see :func:`vwt.methods.visual_word_tokenizer`).
        r: ToMe's tokens merged per layer (an int or one per layer), or the share of each image's tokens
            merged in each layer (a float in [0, 0.5)).
        tome_options: the rest of :class:`vwt.methods.tome.ToMeConfig` (``schedule``, ``inflect``,
            ``similarity``).
    """
    from .tome import ToMe
    from .tokenizers import visual_word_tokenizer

    tokenizer = visual_word_tokenizer(model, vocab, threshold, max_tokens, keep, connected)
    tome = ToMe(model, r=r, **tome_options)
    if not tome.config.proportional_attention:
        raise ValueError("vwt+tome carries the tokenizer's sizes into ToMe: proportional_attention must stay on")
    wrapped = VisualWordModel(model)  # proportional attention: the sizes come with the embedded tokens

    def run(pixel_values: torch.Tensor) -> MethodResult:
        batch = tokenizer(pixel_values=pixel_values)
        tokens = wrapped.embed(batch["pixel_values"], batch["patch_to_token"], batch["attention_mask"],
                               batch["token_sizes"])
        x, size, _, counts = tome.run_layers(tokens.hidden, tokens.sizes.unsqueeze(-1))
        sizes = size[..., 0]
        mask = (sizes > 0).long()
        outputs = wrapped.adapter.outputs(x, mask, token_sizes=sizes)
        return MethodResult(outputs=outputs, tokens_per_layer=tuple(counts), sequence_lengths=tokens.mask.sum(1),
                            token_sizes=sizes.round().long())

    return run
