"""vwt: fewer, better tokens for Vision Transformers at inference, without training."""

__version__ = "0.1.0"

from .build import build_vocabulary  # noqa: E402
from .config import PreprocessConfig, VocabularyConfig  # noqa: E402
from .patches import patch_variance, patchify  # noqa: E402
from .vocabulary import VisualVocabulary, VocabularyLoadError  # noqa: E402

__all__ = [
    "__version__",
    "PreprocessConfig",
    "VocabularyConfig",
    "VisualVocabulary",
    "VocabularyLoadError",
    "build_vocabulary",
    "patchify",
    "patch_variance",
]
