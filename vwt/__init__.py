"""vwt: fewer, better tokens for Vision Transformers at inference, without training.

The public names below are imported on first use (PEP 562), so ``import vwt`` and every command's
``--help`` stay fast; ``from vwt import VisualWordTokenizer`` works as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes
from .version import __version__

if TYPE_CHECKING:
    from . import methods
    from .config import PreprocessConfig, VocabularyConfig
    from .encoders import VisualWordModel, encode, supported_models
    from .patches import patch_variance, patchify
    from .tokenize.intra import IntraImageTokenizer
    from .tokenize.tokenizer import TokenizerConfig, VisualWordTokenizer
    from .vocab.build import build_vocabulary
    from .vocab.vocabulary import VisualVocabulary, VocabularyLoadError

_LAZY = {
    "IntraImageTokenizer": ".tokenize.intra",
    "PreprocessConfig": ".config",
    "TokenizerConfig": ".tokenize.tokenizer",
    "VisualVocabulary": ".vocab.vocabulary",
    "VisualWordModel": ".encoders",
    "VisualWordTokenizer": ".tokenize.tokenizer",
    "VocabularyConfig": ".config",
    "VocabularyLoadError": ".vocab.vocabulary",
    "build_vocabulary": ".vocab.build",
    "encode": ".encoders",
    "methods": ".methods",
    "patch_variance": ".patches",
    "patchify": ".patches",
    "supported_models": ".encoders",
}

__all__ = ["__version__", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
