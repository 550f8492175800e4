"""What every method returns: the model's usual outputs together with what they cost in tokens.

Nothing of a call is kept on the method object; everything a caller may want to inspect after a
call comes back in a :class:`MethodResult`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["MethodResult", "concat_results"]


@dataclass(frozen=True)
class MethodResult:
    """A batch through one method.

    Rows of the token tensors line up with the rows of ``outputs.last_hidden_state`` (CLS included
    where the model has one).
    """

    #: The model's usual output object (last_hidden_state, pooler_output, logits, image_embeds, ...).
    outputs: Any
    #: Sequence length entering each layer, per image, padding included: the compute. For bucketing
    #: and packing, the mean padded length per image.
    tokens_per_layer: tuple[float, ...]
    #: ``[B]`` sequence length of each image entering the first layer: its tokens plus the prefix tokens
    #: (CLS), padding excluded. (A token *count* such as the tokenizer's ``num_tokens`` or ``max_tokens``
    #: leaves the prefix out.)
    sequence_lengths: torch.Tensor
    #: ``[B, T]`` patches (CLS counted as 1) in each final token, where a method merges (ToMe).
    token_sizes: torch.Tensor | None = None
    #: ``[B, T, N]`` uint8: ``source[b, t, n] = 1`` where final token ``t`` holds patch ``n`` (ToMe with
    #: ``trace_source=True``; a CLS row is all zero).
    source: torch.Tensor | None = None
    #: ``[B, k]`` positions among the N patches of the tokens kept to the end (DynamicViT).
    kept_patches: torch.Tensor | None = None

    @property
    def tokens_per_image(self) -> torch.Tensor:
        """Deprecated: :attr:`sequence_lengths` (CLS included, unlike a token count such as ``max_tokens``)."""
        warnings.warn("MethodResult.tokens_per_image is deprecated: use sequence_lengths (the same values, CLS "
                      "included)", DeprecationWarning, stacklevel=2)
        return self.sequence_lengths


def concat_results(results: Sequence[MethodResult]) -> MethodResult:
    """One result for a batch that ran as consecutive groups of images, each image in its row.

    Every tensor of the outputs and of the results is concatenated along the batch; where the groups end
    with different token counts (an adaptive merge pads each group to its own longest image), the token
    dimension (dim 1) is padded with zeros first, so padding tokens have size 0 as in a padded batch (a
    padded row of ``last_hidden_state`` holds zeros). ``tokens_per_layer`` is the mean over all images.

    Args:
        results: the groups' results, in batch order.

    Raises:
        TypeError: an output that is neither a tensor, a sequence or mapping of them, nor None.
    """
    sizes = [len(r.sequence_lengths) for r in results]
    layers = zip(*(r.tokens_per_layer for r in results))
    return MethodResult(
        outputs=_concat([r.outputs for r in results]),
        tokens_per_layer=tuple(sum(n * t for n, t in zip(sizes, layer)) / sum(sizes) for layer in layers),
        sequence_lengths=_concat([r.sequence_lengths for r in results]),
        token_sizes=_concat([r.token_sizes for r in results]),
        source=_concat([r.source for r in results]),
        kept_patches=_concat([r.kept_patches for r in results]),
    )


def _concat(values: list[Any]) -> Any:
    """Concatenate the groups' values of one output along the batch (see :func:`concat_results`)."""
    first = values[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        if first.ndim >= 2:
            longest = max(v.shape[1] for v in values)
            pad = lambda v: (0, 0) * (v.ndim - 2) + (0, longest - v.shape[1])  # noqa: E731
            values = [F.pad(v, pad(v)) if v.shape[1] < longest else v for v in values]
        return torch.cat(values)
    if isinstance(first, Mapping):  # a ModelOutput (or a dict) of tensors
        return type(first)(**{key: _concat([v[key] for v in values]) for key in first.keys()})
    if isinstance(first, (tuple, list)):
        return type(first)(_concat(list(items)) for items in zip(*values))
    raise TypeError(f"cannot join outputs of type {type(first).__name__} across groups of a batch")
