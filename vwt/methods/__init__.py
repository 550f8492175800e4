"""Every method on one call shape: ``load(name, **options).bind(model)(pixel_values) -> MethodResult``.

- :mod:`.registry`: :func:`load` and the method names; :mod:`.result`: :class:`MethodResult`;
- the baselines: :mod:`.tome` (Token Merging, its matching in :mod:`.bipartite`), :mod:`.dynamicvit` (learned
  pruning), :mod:`.quantize` (int8);
- :mod:`.adaptive`: ToMe with a per-image merge count (a share of the tokens, or a similarity threshold);
- :mod:`.hybrids`: visual words at the input, ToMe in the layers (``vwt+tome``); :mod:`.tokenizers`: the
  visual-word tokenizer both ``vwt`` and the hybrids run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .adaptive import adaptive_soft_matching, fraction_counts
    from .bipartite import bipartite_soft_matching, merge_source, merge_wavg
    from .dynamicvit import DynamicViT, DynamicViTConfig, TokenPredictor
    from .hybrids import VwtTome, bind_vwt_tome
    from .quantize import quantize_int8
    from .registry import METHODS, Method, Runner, load
    from .result import MethodResult
    from .tokenizers import visual_word_tokenizer
    from .tome import ToMe, ToMeConfig, attend_proportionally, schedule_r, token_counts

_LAZY = {
    "DynamicViT": ".dynamicvit",
    "DynamicViTConfig": ".dynamicvit",
    "METHODS": ".registry",
    "Method": ".registry",
    "MethodResult": ".result",
    "Runner": ".registry",
    "ToMe": ".tome",
    "ToMeConfig": ".tome",
    "TokenPredictor": ".dynamicvit",
    "VwtTome": ".hybrids",
    "adaptive_soft_matching": ".adaptive",
    "attend_proportionally": ".tome",
    "bind_vwt_tome": ".hybrids",
    "bipartite_soft_matching": ".bipartite",
    "fraction_counts": ".adaptive",
    "load": ".registry",
    "merge_source": ".bipartite",
    "merge_wavg": ".bipartite",
    "quantize_int8": ".quantize",
    "schedule_r": ".tome",
    "token_counts": ".tome",
    "visual_word_tokenizer": ".tokenizers",
}

__all__ = sorted(_LAZY)

#: Old names: ``proportional_attention`` is the setting (ToMeConfig, VisualWordModel), the function attends.
_RENAMED = {"proportional_attention": "attend_proportionally"}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals(), _RENAMED)
