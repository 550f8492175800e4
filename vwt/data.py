"""Image sources, all streamed: the embedded sample photos, a local folder, a ``datasets`` id, an iterable."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ImageRecord",
    "DATASET_ALIASES",
    "IMAGE_EXTENSIONS",
    "SAMPLE_IMAGE_NAMES",
    "sample_images",
    "iter_images",
    "describe_source",
]

logger = logging.getLogger(__name__)

DATASET_ALIASES = {"imagenet": "ILSVRC/imagenet-1k"}
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)
# Real photographs shipped with scikit-image that load without any download.
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


@dataclass
class ImageRecord:
    """One item of a stream: an image (PIL, array or tensor), or ``None`` with the reason it is unreadable."""

    name: str
    image: Any = None
    error: str | None = None


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


def _iter_folder(root: Path) -> Iterator[ImageRecord]:
    from PIL import Image

    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        logger.warning("no image files (%s) under %s", ", ".join(sorted(IMAGE_EXTENSIONS)), root)
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()  # decode now so that truncated files fail here
                yield ImageRecord(str(path.relative_to(root)), image.copy())
        except (OSError, ValueError, SyntaxError) as err:
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


def _iter_dataset(name: str, split: str, **kwargs: Any) -> Iterator[ImageRecord]:
    from datasets import load_dataset

    dataset = load_dataset(name, split=split, streaming=True, **kwargs)
    column = _image_column(getattr(dataset, "features", None))
    for index, row in enumerate(dataset):
        yield ImageRecord(f"{name}[{split}][{index}]", row[column])


def _iter_iterable(images: Iterable[Any]) -> Iterator[ImageRecord]:
    for index, image in enumerate(images):
        yield image if isinstance(image, ImageRecord) else ImageRecord(f"image[{index}]", image)


def describe_source(data: str | os.PathLike | Iterable[Any]) -> str:
    """A short name of a data source, as recorded in a vocabulary's config."""
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    return "iterable"


def iter_images(data: str | os.PathLike | Iterable[Any], split: str = "train", **dataset_kwargs: Any) -> Iterator[ImageRecord]:
    """Stream images from any supported source, lazily.

    Args:
        data: ``"sample"`` (the embedded real photos), ``"imagenet"`` (alias of ``ILSVRC/imagenet-1k``),
            a local folder (searched recursively), a ``datasets`` hub id (streamed, never fully downloaded),
            or an iterable of PIL images / arrays / tensors.
        split: the ``datasets`` split.
        dataset_kwargs: passed to ``datasets.load_dataset``.

    Yields:
        :class:`ImageRecord` items; an unreadable file yields a record with ``error`` set.
    """
    if isinstance(data, (str, os.PathLike)):
        text = str(data)
        if text == "sample":
            return _iter_iterable(ImageRecord(name, image) for name, image in sample_images())
        path = Path(text).expanduser()
        if path.is_dir():
            return _iter_folder(path)
        if path.exists():
            raise ValueError(f"{path} is a file; pass a folder of images, a datasets id or 'sample'")
        return _iter_dataset(DATASET_ALIASES.get(text, text), split, **dataset_kwargs)
    if isinstance(data, Iterable):
        return _iter_iterable(data)
    raise TypeError(f"unsupported image source {type(data).__name__}")
