"""Checks of a tokenized batch, pure and vectorised: every inconsistency a clear error before any model math.

The fast path costs one reduction per tensor and a single host sync for all token checks; the messages
(which image, which value) are worked out only once something is wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["MAX_ABS_PIXEL", "check_pixel_values", "check_tokens"]

MAX_ABS_PIXEL = 1e6
"""The largest absolute pixel value accepted. Normalized pixel values are O(1) (even a std of 0.01 keeps 8-bit
pixels within about 100); 1e6 leaves room for any real mean/std while keeping squared patch norms (up to C*p*p
of them) far from float32 overflow."""


def _is_integer(tensor: torch.Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)


def check_pixel_values(pixel_values: torch.Tensor) -> None:
    """Raise a clear error unless ``pixel_values`` ``[B, C, H, W]`` are floating point, finite and within
    :data:`MAX_ABS_PIXEL` (preprocessed, normalized pixels)."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be floating point (the image processor's normalized output), got {pixel_values.dtype}; "
            "pass raw images as images=... to have them preprocessed"
        )
    if pixel_values.numel() == 0:
        raise ValueError(f"pixel_values are empty: shape {tuple(pixel_values.shape)}")
    low, high = torch.aminmax(pixel_values.detach())  # one pass, no copy; NaN propagates to both
    peak = torch.maximum(-low, high)  # the comparison below is False for NaN
    if not bool(peak <= MAX_ABS_PIXEL):
        if not bool(torch.isfinite(pixel_values).all()):
            raise ValueError("pixel_values contain NaN or infinite values")
        raise ValueError(
            f"pixel_values reach {float(peak):.3g}, far outside normalized pixel values (|x| <= {MAX_ABS_PIXEL:g}): "
            "were they normalized with the model's image processor?"
        )


def _first(mask: torch.Tensor) -> int:
    """Index of the first row where ``mask`` ``[B, ...]`` has a True."""
    return int(mask.reshape(len(mask), -1).any(1).nonzero()[0, 0])


def check_tokens(patch_to_token: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 token_sizes: torch.Tensor | None = None) -> None:
    """Raise a clear error where a tokenized batch is inconsistent.

    Args:
        patch_to_token: ``[B, N]`` integer, each patch's token in ``0..T-1`` or -1 (dropped).
        attention_mask: ``[B, 1 + T]`` integer or bool, 0/1: CLS is 1, then each image's tokens, then padding
            (0); token ``t`` is 1 exactly where at least one patch lands in it. ``None``: derived from
            ``patch_to_token`` (tokens ``0..max``), which then must use every token up to its maximum.
        token_sizes: optional ``[B, T]`` integer, patches per token: 0 for padding, and for a real token
            between 1 and its patch count in ``patch_to_token`` (the count itself, or less to weigh it down,
            e.g. all ones to switch size-aware attention off).
    """
    if not isinstance(patch_to_token, torch.Tensor) or not _is_integer(patch_to_token):
        got = patch_to_token.dtype if isinstance(patch_to_token, torch.Tensor) else type(patch_to_token).__name__
        raise TypeError(f"patch_to_token must be an integer tensor (token index per patch, -1 dropped), got {got}")
    if patch_to_token.ndim != 2:
        raise ValueError(f"patch_to_token must be [B, N], got shape {tuple(patch_to_token.shape)}")
    b = len(patch_to_token)
    ptt = patch_to_token.long()
    if attention_mask is None:
        width = int(ptt.max()) + 2 if ptt.numel() else 1
        derived = torch.arange(width, device=ptt.device) < (ptt.amax(1, keepdim=True) + 2 if ptt.numel() else 1)
        mask = derived.long()
    else:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.is_floating_point() or attention_mask.is_complex():
            got = attention_mask.dtype if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
            raise TypeError(f"attention_mask must be an integer or bool tensor of 0/1, got {got}")
        if attention_mask.ndim != 2 or len(attention_mask) != b or attention_mask.shape[1] < 1:
            raise ValueError(f"attention_mask must be [B, 1 + T] with B = {b} (CLS first), got shape "
                             f"{tuple(attention_mask.shape)}")
        mask = attention_mask.to(ptt.device).long()
    t = mask.shape[1] - 1
    low, high = (int(v) for v in torch.stack([ptt.min(), ptt.max()])) if ptt.numel() else (-1, -1)
    if low < -1:
        raise ValueError(f"patch_to_token has {low}: token indices are >= 0, and -1 marks a dropped patch")
    if high >= t:
        raise ValueError(f"patch_to_token points at token {high} but attention_mask {tuple(mask.shape)} has room for "
                         f"{t} tokens (CLS + {t} columns): is it cut short, or from another batch?")
    counts = torch.zeros(b, t, dtype=torch.long, device=ptt.device)
    counts.scatter_add_(1, ptt.clamp(min=0), (ptt >= 0).long())  # [B, T] patches per token
    tokens = mask[:, 1:]
    checks: list[tuple[torch.Tensor, Callable[[], str]]] = [
        (((mask == 0) | (mask == 1)).all(),
         lambda: f"attention_mask must hold only 0 and 1, found values {mask.unique().tolist()[:8]}"),
        ((mask[:, 0] == 1).all(),
         lambda: f"attention_mask[:, 0] is the CLS token and must be 1; it is 0 for image {_first(mask[:, :1] != 1)}"),
        ((tokens[:, 1:] <= tokens[:, :-1]).all() if t > 1 else torch.tensor(True),
         lambda: f"attention_mask must be 1s then 0s (padding last); image {_first(tokens[:, 1:] > tokens[:, :-1])} is not"),
        (((counts > 0) == (tokens == 1)).all(),
         lambda: _disagreement(counts, tokens)),
    ]
    if token_sizes is not None:
        if not isinstance(token_sizes, torch.Tensor) or not _is_integer(token_sizes):
            got = token_sizes.dtype if isinstance(token_sizes, torch.Tensor) else type(token_sizes).__name__
            raise TypeError(f"token_sizes must be an integer tensor (patches per token), got {got}")
        if tuple(token_sizes.shape) != (b, t):
            raise ValueError(f"token_sizes must be [B, T] = {(b, t)} like attention_mask[:, 1:], got "
                             f"{tuple(token_sizes.shape)}")
        sizes = token_sizes.to(ptt.device).long()
        bad = (sizes > counts) | ((sizes > 0) != (counts > 0))  # [B, T]
        checks.append(((~bad).all(), lambda: (
            f"token_sizes disagree with patch_to_token for image {_first(bad)}: "
            f"{sizes[_first(bad)].tolist()[:12]} vs patch counts {counts[_first(bad)].tolist()[:12]} "
            "(a token's size is between 1 and its patch count, 0 for padding)")))
    if not bool(torch.stack([ok for ok, _ in checks]).all()):  # one sync for all of them
        raise ValueError(next(message() for ok, message in checks if not bool(ok)))


def _disagreement(counts: torch.Tensor, tokens: torch.Tensor) -> str:
    bad = (counts > 0) != (tokens == 1)
    i = _first(bad)
    j = int(bad[i].nonzero()[0, 0])
    what = ("has patches but is 0 in attention_mask" if counts[i, j] > 0
            else "is 1 in attention_mask but no patch lands in it (an empty token)")
    return (f"attention_mask and patch_to_token disagree for image {i}: token {j} {what}; "
            f"the mask has {int(tokens[i].sum())} tokens, patch_to_token fills {int((counts[i] > 0).sum())}")
