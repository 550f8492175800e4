"""Image sources, all streamed: the embedded sample photos, a local folder, a ``datasets`` id, an iterable."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import check_local_path

__all__ = [
    "ImageRecord",
    "DATASET_ALIASES",
    "IMAGE_EXTENSIONS",
    "SAMPLE_IMAGE_NAMES",
    "sample_images",
    "iter_images",
    "is_dataset_id",
    "describe_source",
    "folder_files",
    "source_fingerprint",
]

logger = logging.getLogger(__name__)

DATASET_ALIASES = {"imagenet": "ILSVRC/imagenet-1k"}
"""Short ``--data`` names for hub datasets."""
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)
"""The file suffixes a folder source reads as images (lower case)."""
SAMPLE_IMAGE_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "moon",
    "coins",
    "brick",
    "grass",
    "gravel",
    "clock",
    "cell",
)
"""Real photographs shipped with scikit-image that load without any download."""


@dataclass
class ImageRecord:
    """One item of a stream: an image (PIL, array or tensor), or ``None`` with the reason it is unreadable.

    A lazily decoded record (``iter_images(..., decode=False)``) carries ``source`` instead of ``image``:
    a file path, or a ``datasets`` image cell ``{"bytes": ..., "path": ...}``; :func:`vwt.vocab.decode.decode_record`
    decodes it (in a worker process, for a parallel build).
    """

    name: str
    image: Any = None
    error: str | None = None
    source: Any = None


def sample_images() -> list[tuple[str, Any]]:
    """The embedded default: real photos that ship with installed packages, as ``(name, array)`` pairs.

    scikit-image's photographs, scikit-learn's two sample photos and matplotlib's ``grace_hopper.jpg``
    (18 photos; all three packages are dependencies). No network is used.
    """
    import matplotlib.cbook
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    images = [(f"skimage/{name}", getattr(skimage.data, name)()) for name in SAMPLE_IMAGE_NAMES]
    bunch = load_sample_images()
    images += [(f"sklearn/{Path(f).name}", im) for f, im in zip(bunch.filenames, bunch.images)]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        image = Image.open(fh)
        image.load()
    images.append(("matplotlib/grace_hopper.jpg", image))
    return images


def folder_files(root: str | os.PathLike) -> list[Path]:
    """The image files under ``root`` (recursively, by extension), sorted: the order a folder is streamed in."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _iter_folder(root: Path, decode: bool = True) -> Iterator[ImageRecord]:
    from PIL import Image

    oversized = Image.DecompressionBombError  # over Pillow's pixel limit: skipped like any unreadable file
    files = folder_files(root)
    if not files:
        logger.warning("no image files (%s) under %s", ", ".join(sorted(IMAGE_EXTENSIONS)), root)
    for path in files:
        if not decode:
            yield ImageRecord(str(path.relative_to(root)), source=str(path))
            continue
        try:
            with Image.open(path) as image:
                image.load()  # decode now so that truncated files fail here
                yield ImageRecord(str(path.relative_to(root)), image.copy())
        except (OSError, ValueError, SyntaxError, oversized) as err:
            yield ImageRecord(str(path.relative_to(root)), error=f"{type(err).__name__}: {err}")


def _image_column(features: Any) -> str:
    from datasets import Image as ImageFeature

    if features is not None:
        for name, feature in features.items():
            if isinstance(feature, ImageFeature):
                return name
    for name in ("image", "img", "pixel_values"):
        if features is None or name in features:
            return name
    raise ValueError(f"no image column in dataset features {list(features)}")


def _iter_dataset(
    name: str, split: str, decode: bool = True, shard: tuple[int, int] = (0, 1), take: int | None = None, **kwargs: Any
) -> Iterator[ImageRecord]:
    from datasets import Image as ImageFeature
    from datasets import load_dataset
    from datasets.distributed import split_dataset_by_node

    dataset = load_dataset(name, split=split, streaming=True, **kwargs)
    column = _image_column(getattr(dataset, "features", None))
    if not decode:  # rows carry the encoded bytes; decoding happens where the record is used (a worker)
        dataset = dataset.cast_column(column, ImageFeature(decode=False))
    if take is not None:
        dataset = dataset.take(take)
    rank, world = shard
    if world > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world)
    for index, row in enumerate(dataset):
        item = f"{name}[{split}][{index}]" if world == 1 else f"{name}[{split}][rank {rank}/{world}][{index}]"
        if decode:
            yield ImageRecord(item, row[column])
        else:
            yield ImageRecord(item, source=row[column])


def _iter_iterable(images: Iterable[Any]) -> Iterator[ImageRecord]:
    for index, image in enumerate(images):
        yield image if isinstance(image, ImageRecord) else ImageRecord(f"image[{index}]", image)


def describe_source(data: str | os.PathLike | Iterable[Any]) -> str:
    """A short name of a data source, as recorded in a vocabulary's config."""
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    return "iterable"


def source_fingerprint(data: str | os.PathLike | Iterable[Any], split: str = "train", max_images: int | None = None,
                       dataset_kwargs: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What identifies the images a build streams, for a checkpoint to check that a resume streams the same.

    A folder: its image files in stream order (the first ``max_images``), each with its size and
    modification time, as a count and a SHA-256. A ``datasets`` id: the id, split, config (``name``),
    ``revision``, ``data_dir`` and ``data_files`` as given. ``"sample"``: the names of the photos.
    An iterable: ``None`` (it cannot be identified; resuming it is the caller's responsibility).
    """
    if not isinstance(data, (str, os.PathLike)):
        return None
    if str(data) == "sample":
        return {"kind": "sample", "images": list(SAMPLE_IMAGE_NAMES)}
    path = Path(data).expanduser()
    if path.is_dir():
        files = folder_files(path)[:max_images]
        digest = hashlib.sha256()
        for file in files:
            info = file.stat()
            digest.update(f"{file.relative_to(path)}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
        return {"kind": "folder", "files": len(files), "sha256": digest.hexdigest()}
    kwargs = dataset_kwargs or {}
    given = {key: kwargs.get(key) for key in ("name", "revision", "data_dir", "data_files")}
    return {"kind": "dataset", "id": DATASET_ALIASES.get(str(data), str(data)), "split": split,
            **json.loads(json.dumps(given, default=str))}


def is_dataset_id(data: Any) -> bool:
    """Whether ``data`` names a ``datasets`` hub dataset (not ``sample``, a folder, a file or an iterable)."""
    if not isinstance(data, (str, os.PathLike)) or str(data) == "sample":
        return False
    return not Path(data).expanduser().exists()


def iter_images(
    data: str | os.PathLike | Iterable[Any],
    split: str = "train",
    *,
    decode: bool = True,
    **dataset_kwargs: Any,
) -> Iterator[ImageRecord]:
    """Stream images from any supported source, lazily.

    Args:
        data: ``"sample"`` (the embedded real photos), ``"imagenet"`` (alias of ``ILSVRC/imagenet-1k``),
            a local folder (searched recursively), a ``datasets`` hub id (streamed, never fully downloaded),
            or an iterable of PIL images / arrays / tensors.
        split: the ``datasets`` split.
        decode: ``False``: folder files and dataset rows are not decoded here; their records carry ``source``
            (see :class:`ImageRecord`) for :func:`vwt.vocab.decode.decode_record`.
        dataset_kwargs: passed to ``datasets.load_dataset`` (and ``shard=(rank, world)`` / ``take=n``:
            this process's share of the stream by ``datasets.distributed.split_dataset_by_node``, after
            its first ``n`` rows).

    Yields:
        :class:`ImageRecord` items; an unreadable file yields a record with ``error`` set.
    """
    if isinstance(data, (str, os.PathLike)):
        text = str(data)
        if not text:
            raise ValueError("empty image source: pass 'sample', a folder, a datasets id or an iterable")
        if text == "sample":
            return _iter_iterable(ImageRecord(name, image) for name, image in sample_images())
        path = Path(text).expanduser()
        if path.is_dir():
            return _iter_folder(path, decode)
        if path.exists():
            raise ValueError(f"{path} is a file; pass a folder of images, a datasets id or 'sample'")
        check_local_path(text, "folder")  # a mistyped folder is an error here, never a hub lookup
        return _iter_dataset(DATASET_ALIASES.get(text, text), split, decode, **dataset_kwargs)
    if isinstance(data, Iterable):
        return _iter_iterable(data)
    raise TypeError(f"unsupported image source {type(data).__name__}")
