"""What every method returns: the model's usual outputs together with what they cost in tokens.

Nothing of a call is kept on the method object; everything a caller may want to inspect after a
call comes back in a :class:`MethodResult`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["MethodResult"]


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
