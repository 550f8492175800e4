"""Convert the reference implementation's ``vocab.pt`` into a vocabulary directory.

The reference code (github.com/wearepal/visual-word-tokenizer, linked from arXiv:2411.15397) saves its
words with ``torch.save(centroids)`` and publishes ImageNet-1k vocabularies on the hub
(``LeonidasY/inter-image-imgnet-{100,1000,10000}``). This is the ONE place in ``vwt`` that reads a
``torch.save`` file, and it never unpickles it: :mod:`vwt.vocab.torchsave` parses the archive's pickle
opcodes without running them and accepts only one 2-D floating-point tensor. Everything else in ``vwt``
reads safetensors.

What the reference code does, read from its repository (``utils/imgnet_dataset.py``, ``process.py``,
``vwt/inter.py``, ``utils/vwt.py``):

- preprocessing of the ImageNet-1k train split (``get_transform(train=True, augment_data=False,
  target_resolution=(224, 224))``): torchvision ``Resize((256, 256))`` -- both sides to 256, the aspect
  ratio is NOT kept -- with torchvision's default bilinear interpolation (Pillow's on PIL images),
  ``CenterCrop(224)``, ``ToTensor()``, ``Normalize`` with CLIP's mean and std;
- patches: ``pixel_values.unfold(1, 3, 3).unfold(2, p, p).unfold(3, p, p)`` flattened to ``3 * p * p``,
  channel-major (the order of :func:`vwt.patches.patchify`);
- k-means: ``MiniBatchKMeans(n_clusters=k, n_init="auto", batch_size=1024)``, ``partial_fit`` on every
  patch of each DataLoader batch of 1024 images; no ``random_state`` is passed, so it is not reproducible;
- matching: cosine distance ``1 - normalize(patch) @ normalize(word)``, nearest word, a patch whose
  distance is ``> thresh`` stays alone -- the same rule as :class:`vwt.tokenize.tokenizer.VisualWordTokenizer`.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..config import VocabularyConfig
from ..io import BadFileError, atomic_directory, check_output, check_regular_file
from ..preprocess import preprocess_config
from ..version import __version__
from .torchsave import SavedTensor, TorchSaveError, read_header, read_tensor
from .vocabulary import VOCABULARY_CONTENTS, VisualVocabulary, VocabularyLoadError

__all__ = ["MAX_BYTES", "REFERENCE_PREPROCESSING", "convert_reference_vocab", "load_reference_centroids",
           "reference_image_processor"]

logger = logging.getLogger(__name__)

MAX_BYTES = 2**31
"""The most bytes a ``vocab.pt`` file, or its centroids as float32, may take (2 GiB: 700,000 words of 768 values)."""

REFERENCE_PREPROCESSING = (
    "torchvision Resize((256, 256)) bilinear (aspect ratio not kept), CenterCrop(224), ToTensor, "
    "Normalize(CLIP mean, CLIP std) -- utils/imgnet_dataset.py of github.com/wearepal/visual-word-tokenizer"
)
"""The reference implementation's preprocessing, as a converted vocabulary's card records it."""


def reference_image_processor() -> Any:
    """The reference's ImageNet preprocessing as a Hugging Face processor: 256x256 bilinear, crop 224, CLIP mean/std."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"height": 256, "width": 256},
        resample=2,  # PIL.Image.BILINEAR, torchvision's default interpolation
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
    )


def load_reference_centroids(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> torch.Tensor:
    """``[k, D]`` float32 centroids from a reference ``vocab.pt``; anything but one 2-D float tensor is refused.

    Only a regular file of at most ``max_bytes`` is read, and the tensor is materialised only if its
    ``k * D`` float32 values fit in ``max_bytes`` too (a few bytes of ``torch.save`` can describe an
    expanded view of terabytes).
    """
    try:
        check_regular_file(path)
        size = os.stat(path).st_size
    except (BadFileError, OSError) as err:
        raise VocabularyLoadError(f"{path}: cannot read it ({err})") from err
    limit = f"the limit of {max_bytes:,} bytes (max_bytes; --max-bytes raises it)"
    if size > max_bytes:
        raise VocabularyLoadError(f"{path}: the file is {size:,} bytes, over {limit}")
    try:
        obj = read_header(path)
    except TorchSaveError as err:
        raise VocabularyLoadError(f"{path}: {err}") from err
    if not isinstance(obj, SavedTensor):
        raise VocabularyLoadError(f"{path}: expected one tensor, found {type(obj).__name__}")
    if len(obj.shape) != 2 or not obj.dtype.is_floating_point:
        raise VocabularyLoadError(f"{path}: expected a 2-D float tensor of centroids, found {obj.dtype} "
                                  f"of shape {obj.shape}")
    if obj.numel * 4 > max_bytes:  # before anything materialises it
        raise VocabularyLoadError(f"{path}: a {list(obj.shape)} tensor takes {obj.numel * 4:,} bytes as float32, "
                                  f"over {limit}")
    try:
        tensor = read_tensor(path, obj)
    except (TorchSaveError, OSError, zipfile.BadZipFile) as err:
        raise VocabularyLoadError(f"{path}: {err}") from err
    centroids = tensor.to(torch.float32)
    if not torch.isfinite(centroids).all():
        raise VocabularyLoadError(f"{path}: centroids contain NaN or infinite values")
    return centroids


def _check_out(path: str | os.PathLike, out: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an ``out`` that holds the input file, and one that ``overwrite`` may not replace, before reading."""
    source, target = Path(path).resolve(), Path(out).resolve()
    if target == source or target in source.parents:
        raise ValueError(f"{out} holds the input {path}: writing there would delete it; choose another --out")
    check_output(out, overwrite=overwrite, contents=VOCABULARY_CONTENTS)


def convert_reference_vocab(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    source: str | None = None,
    image_processor: Any | None = None,
    num_channels: int = 3,
    overwrite: bool = False,
    command: str = "",
    max_bytes: int = MAX_BYTES,
) -> VisualVocabulary:
    """A :class:`VisualVocabulary` from a reference ``vocab.pt`` (saved to ``out`` atomically if given).

    Args:
        path: the ``vocab.pt`` file.
        out: output directory (``save_pretrained`` layout with a card recording source and preprocessing).
        source: where the file came from, for the card (e.g. ``LeonidasY/inter-image-imgnet-1000``).
        image_processor: the preprocessing the words were learned in; default
            :func:`reference_image_processor` (the reference's ImageNet transform).
        num_channels: image channels; the patch size follows from ``D = num_channels * p * p``.
        overwrite: replace an existing ``out`` that holds a vocabulary (or nothing); never the directory
            that holds ``path``.
        command: the command line, for the card.
        max_bytes: the most bytes the file, or its centroids as float32, may take.
    """
    if out is not None:
        _check_out(path, out, overwrite)
    centroids = load_reference_centroids(path, max_bytes=max_bytes)
    k, dim = centroids.shape
    patch_size = math.isqrt(dim // num_channels)
    if num_channels * patch_size**2 != dim:
        raise VocabularyLoadError(f"{path}: {dim} values per word is not {num_channels} x p x p for any patch size p")
    pre = preprocess_config(image_processor or reference_image_processor())
    config = VocabularyConfig(
        k=k,
        patch_size=patch_size,
        num_channels=num_channels,
        preprocess=pre,
        dataset="ILSVRC/imagenet-1k",
        split="train",
        batch_size=1024,
        vwt_version=__version__,
        command=command,
        extra={
            "converted from": f"`{source or Path(path).name}` (reference `vocab.pt`, torch.save of the centroids)",
            "reference preprocessing": REFERENCE_PREPROCESSING,
            "reference k-means": "MiniBatchKMeans(n_init='auto', batch_size=1024), every patch, no random_state; "
                                 "images and patches seen are not recorded in vocab.pt (0 here means unknown)",
        },
    )
    vocab = VisualVocabulary(centroids, config)
    if out is not None:
        with atomic_directory(out, overwrite=overwrite, contents=VOCABULARY_CONTENTS) as tmp:
            vocab.save_pretrained(tmp)
    logger.info("converted %s: k=%d, patch %d", path, k, patch_size)
    return vocab
