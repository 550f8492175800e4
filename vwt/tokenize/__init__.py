"""The online stage, model-agnostic: images to tokens (``patch_to_token``, ``attention_mask``).

- :mod:`.tokenizer`: :class:`VisualWordTokenizer` (inter-image);
- :mod:`.intra`: :class:`IntraImageTokenizer` (keep each image's most heterogeneous patches);
- :mod:`.base`: what both share (input checks, the batch they return);
- :mod:`.floor`: the per-image token floor (``min_keep``);
- :mod:`.matching`: patches to words, words to groups, padding (pure tensor functions);
- :mod:`.spatial`: connected groups.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .intra import IntraImageTokenizer
    from .tokenizer import TokenizerConfig, VisualWordTokenizer

_LAZY = {
    "IntraImageTokenizer": ".intra",
    "TokenizerConfig": ".tokenizer",
    "VisualWordTokenizer": ".tokenizer",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
