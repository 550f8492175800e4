"""vwt: fewer, better tokens for Vision Transformers at inference, without training."""

__version__ = "0.1.0"

from . import methods  # noqa: E402
from .build import build_vocabulary  # noqa: E402
from .config import PreprocessConfig, VocabularyConfig  # noqa: E402
from .encoders import VisualWordModel, encode, supported_models  # noqa: E402
from .patches import patch_variance, patchify  # noqa: E402
from .tokenizer import IntraImageTokenizer, TokenizerConfig, VisualWordTokenizer  # noqa: E402
from .vocabulary import VisualVocabulary, VocabularyLoadError  # noqa: E402

__all__ = [
    "__version__",
    "IntraImageTokenizer",
    "PreprocessConfig",
    "TokenizerConfig",
    "VisualVocabulary",
    "VisualWordModel",
    "VisualWordTokenizer",
    "VocabularyConfig",
    "VocabularyLoadError",
    "build_vocabulary",
    "encode",
    "methods",
    "patch_variance",
    "patchify",
    "supported_models",
]
