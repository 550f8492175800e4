"""The tokenizer a ``vwt`` method runs for a model: shared by the ``vwt`` method and the hybrids."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..encoders import adapter_for

__all__ = ["visual_word_tokenizer"]


def visual_word_tokenizer(model: nn.Module, vocab: Any, threshold: float | None = None,
                          max_tokens: int | None = None, keep: float | None = None,
                          connected: bool | None = None, window: int | None = None,
                          norm_band: float | None = None, min_keep: float | None = None) -> Any:
    """The :class:`~vwt.tokenize.tokenizer.VisualWordTokenizer` a ``vwt`` method runs for ``model``.

    ``vocab`` is a vocabulary or tokenizer directory / hub id (the other options override what it saved),
    or a tokenizer (then the options must agree with it).
    """
    from ..tokenize.tokenizer import VisualWordTokenizer

    if vocab is None:
        raise ValueError("vwt needs vocab=<directory or hub id of a vocabulary, or a VisualWordTokenizer>")
    if isinstance(vocab, VisualWordTokenizer):
        given = {"threshold": threshold, "max_tokens": max_tokens, "keep": keep, "connected": connected,
                 "window": window, "norm_band": norm_band, "min_keep": min_keep}
        conflicts = {k: v for k, v in given.items() if v is not None and v != getattr(vocab.config, k)}
        if conflicts:
            raise ValueError(f"{conflicts} conflict with the given tokenizer's {vocab.config}")
        tokenizer = vocab
    else:
        tokenizer = VisualWordTokenizer.from_pretrained(vocab, threshold=threshold, max_tokens=max_tokens, keep=keep,
                                                        connected=connected, window=window,
                                                        norm_band=norm_band, min_keep=min_keep)
    adapter = adapter_for(model)
    if tokenizer.patch_size != adapter.patch_size:
        raise ValueError(f"the vocabulary has patch size {tokenizer.patch_size}, the model {adapter.patch_size}")
    return tokenizer
