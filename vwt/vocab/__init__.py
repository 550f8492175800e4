"""The offline stage: images to patches to visual words (a vocabulary on disk).

- :mod:`.data`: image sources (the embedded sample photos, folders, ``datasets`` ids);
- :mod:`.decode` and :mod:`.stream`: images to patches in the model's normalized pixel space, on worker processes;
- :mod:`.kmeans`: the streaming ``MiniBatchKMeans``; :mod:`.checkpoint`: its resumable state;
- :mod:`.distributed`: ``torchrun``; :mod:`.build`: the whole build;
- :mod:`.vocabulary`: the :class:`VisualVocabulary` on disk and on the hub, with its card (:mod:`.card`);
- :mod:`.convert`: the reference implementation's vocabularies to this format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .build import BuildStats, build_vocabulary
    from .checkpoint import CheckpointError
    from .convert import convert_reference_vocab
    from .data import iter_images, sample_images
    from .kmeans import KMeansStream
    from .vocabulary import VisualVocabulary, VocabularyLoadError

_LAZY = {
    "BuildStats": ".build",
    "CheckpointError": ".checkpoint",
    "KMeansStream": ".kmeans",
    "VisualVocabulary": ".vocabulary",
    "VocabularyLoadError": ".vocabulary",
    "build_vocabulary": ".build",
    "convert_reference_vocab": ".convert",
    "iter_images": ".data",
    "sample_images": ".data",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
