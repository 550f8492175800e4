"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``: a small idx-format reader.

The package installs four gzipped idx files under ``/usr/share/datasets/fashion-mnist``. The idx
format is a big-endian header (magic ``0x0000 08 NDIM`` for unsigned bytes, then one int32 per
dimension) followed by the raw row-major bytes.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD",
           "load_fashion_mnist", "to_pixel_values"]

#: Where the Debian package puts the files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Class names, by label.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
#: Mean and std of the training images' pixels scaled to [0, 1].
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

_PREFIX = {"train": "train", "test": "t10k"}
_UBYTE = 0x08


def _read_idx(path: Path, ndim: int, limit: int | None) -> np.ndarray:
    """The array in one gzipped idx file of unsigned bytes, only its first ``limit`` items when given."""
    with gzip.open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
        if len(header) != 4 + 4 * ndim:
            raise ValueError(f"{path}: truncated idx header")
        magic = int.from_bytes(header[:4], "big")
        if magic >> 8 != _UBYTE or magic & 0xFF != ndim:
            raise ValueError(f"{path}: not an idx file of {ndim}-d unsigned bytes (magic {magic:#010x})")
        shape = [int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
        if limit is not None:
            shape[0] = min(shape[0], limit)
        count = int(np.prod(shape))
        data = f.read(count)
    if len(data) != count:
        raise ValueError(f"{path}: truncated, expected {count} bytes of data, got {len(data)}")
    return np.frombuffer(bytearray(data), dtype=np.uint8).reshape(shape)  # bytearray: a writable array


def load_fashion_mnist(split: str, limit: int | None = None,
                       data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images and labels, in file order.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        limit: read only the first ``limit`` examples.
        data_dir: where the idx files are (default: the Debian package's ``/usr/share/datasets/fashion-mnist``).

    Returns:
        ``images`` uint8 ``[N, 28, 28]`` and ``labels`` int64 ``[N]`` in ``0..9``.

    Raises:
        FileNotFoundError: the files are absent (``apt-get install dataset-fashion-mnist``).
    """
    if split not in _PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    root = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    images_path = root / f"{_PREFIX[split]}-images-idx3-ubyte.gz"
    labels_path = root / f"{_PREFIX[split]}-labels-idx1-ubyte.gz"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST file {path} not found; install the Debian package with "
                "`apt-get install dataset-fashion-mnist` (or pass data_dir=)"
            )
    images = _read_idx(images_path, 3, limit)
    labels = _read_idx(labels_path, 1, limit).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images but {len(labels)} labels for split {split!r}")
    return images, labels


def to_pixel_values(images: np.ndarray, mean: float = FASHION_MNIST_MEAN, std: float = FASHION_MNIST_STD):
    """uint8 ``[N, H, W]`` -> normalized float32 ``torch.Tensor`` ``[N, 1, H, W]``."""
    import torch

    pixels = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
    return pixels.sub_(mean).div_(std).unsqueeze(1)
