"""Ragged batches: every real token of a batch in one sequence, no padding, attention kept within each image.

A padded batch ``[B, S, D]`` with its mask ``[B, S]`` becomes one sequence ``[L, D]`` of its ``L`` real
tokens, image after image (each image's tokens in their padded order, so CLS stays first). The linear
layers then process exactly the real tokens; attention sees which image (document) each token belongs
to. For FlexAttention that is a document :class:`~torch.nn.attention.flex_attention.BlockMask`, built
here directly from the document boundaries (a few ``[L / block, L / block]`` comparisons) instead of
evaluating a mask function on all ``L x L`` pairs as ``create_block_mask`` does (seconds at batch 32 on
a CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RaggedLayout", "ragged_layout", "to_ragged", "from_ragged", "document_block_mask"]


@dataclass(frozen=True)
class RaggedLayout:
    """Where the real tokens of a padded ``[B, S]`` batch sit in its ragged sequence of ``L`` tokens."""

    #: ``[B]`` int64, real tokens per image.
    lengths: torch.Tensor
    #: ``[L]`` int64, the flat position ``b * S + s`` of each real token in the padded batch (ascending).
    index: torch.Tensor
    #: ``[L]`` int64, the image (document) of each real token (non-decreasing).
    document: torch.Tensor
    #: B, images in the batch.
    batch: int
    #: S, the padded length.
    width: int


def ragged_layout(mask: torch.Tensor) -> RaggedLayout:
    """The ragged layout of a padded batch.

    Args:
        mask: ``[B, S]`` padding mask, 1 (or True) for real tokens.

    One host sync (the number of real tokens ``L`` decides a shape).
    """
    b, s = mask.shape
    valid = mask.bool()
    index = valid.flatten().nonzero().squeeze(1)
    return RaggedLayout(valid.sum(1), index, torch.div(index, s, rounding_mode="floor"), b, s)


def to_ragged(padded: torch.Tensor, layout: RaggedLayout) -> torch.Tensor:
    """``[B, S, ...]`` padded values -> ``[L, ...]`` the real tokens' values, image after image."""
    return padded.flatten(0, 1)[layout.index]


def from_ragged(ragged: torch.Tensor, layout: RaggedLayout, fill: float = 0.0) -> torch.Tensor:
    """Inverse of :func:`to_ragged`: ``[L, ...]`` -> ``[B, S, ...]`` with ``fill`` at the padding."""
    out = ragged.new_full((layout.batch * layout.width, *ragged.shape[1:]), fill)
    return out.index_copy(0, layout.index, ragged).view(layout.batch, layout.width, *ragged.shape[1:])


def document_block_mask(document: torch.Tensor, block_size: int = 128):  # -> BlockMask (flex import is lazy)
    """FlexAttention's block mask for attention within documents of a ragged sequence.

    Args:
        document: ``[L]`` int64, non-decreasing document (image) index of each token.
        block_size: the query and key block size of the kernel.

    Returns:
        A ``BlockMask`` over ``L`` queries and keys: a block where every query and key lie in one document
        is *full* (no mask evaluated), a block that straddles a document boundary is *partial* (its mask,
        ``document[q] == document[k]``, is evaluated), every other block is skipped.
    """
    from torch.nn.attention.flex_attention import BlockMask

    length = document.shape[0]
    num_blocks = -(-length // block_size)
    device = document.device
    counts = torch.bincount(document)
    ends = counts.cumsum(0)
    starts = ends - counts
    first = torch.arange(num_blocks, device=device) * block_size  # [nb] first token of each block
    last = (first + block_size).clamp_max(length) - 1  # [nb] last token of each block
    first_doc, last_doc = document[first], document[last]
    lo, hi = starts[first_doc], ends[last_doc]  # keys of a query block: tokens [lo, hi)
    touched = (first.unsqueeze(0) < hi.unsqueeze(1)) & (last.unsqueeze(0) >= lo.unsqueeze(1))  # [nb q, nb kv]
    one_doc = first_doc == last_doc  # [nb]: the block lies inside one document
    same = first_doc.unsqueeze(1) == first_doc.unsqueeze(0)
    full = touched & same & one_doc.unsqueeze(1) & one_doc.unsqueeze(0)
    full = full & (last - first + 1 == block_size).unsqueeze(0) & (last - first + 1 == block_size).unsqueeze(1)
    partial = touched & ~full

    def blocks(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = (~selected).to(torch.int8).argsort(dim=1, stable=True)  # selected blocks first, ascending
        return selected.sum(1).to(torch.int32)[None, None], order.to(torch.int32)[None, None]

    padded = torch.cat([document, document.new_full((num_blocks * block_size - length,), -1)])

    def same_document(b, h, q, k):  # noqa: ANN001, ANN202 (FlexAttention's mask_mod signature)
        return padded[q] == padded[k]

    return BlockMask.from_kv_blocks(*blocks(partial), *blocks(full), BLOCK_SIZE=block_size,
                                    mask_mod=same_document, seq_lengths=(length, length))
