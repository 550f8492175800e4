"""``vwt-convert-vocab``: the reference implementation's ``vocab.pt`` to a vocabulary directory."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from . import positive_int

__all__ = ["convert_vocab_parser", "main"]


def convert_vocab_parser() -> argparse.ArgumentParser:
    """The parser of ``vwt-convert-vocab``."""
    parser = argparse.ArgumentParser(
        prog="vwt-convert-vocab",
        description="Convert the reference implementation's vocab.pt (torch.save of a [k, 3*p*p] centroid tensor, "
        "e.g. from LeonidasY/inter-image-imgnet-1000) into a vocabulary directory (vocab.safetensors, config.json, "
        "README.md). The file is parsed, never unpickled, and must hold one 2-D float tensor.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("vocab_pt", help="path of the reference vocab.pt")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--source", default=None, help="where vocab.pt came from (hub repo id), for the card")
    parser.add_argument(
        "--image-processor",
        default=None,
        metavar="ID_OR_DIR",
        help="the preprocessing the words were learned in; default: the reference's ImageNet transform "
        "(256x256 bilinear, center crop 224, CLIP mean/std)",
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out that holds a vocabulary (or nothing)")
    parser.add_argument("--max-bytes", type=positive_int, default=2**31, metavar="BYTES",
                        help="the most bytes vocab.pt, or its centroids as float32, may take (2**31: 2 GiB)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vwt-convert-vocab``; returns the exit status (0 ok, 1 failure, 2 usage)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = convert_vocab_parser().parse_args(args_list)
    try:
        from ..preprocess import load_image_processor
        from ..vocab.convert import convert_reference_vocab

        processor = None if args.image_processor is None else load_image_processor(args.image_processor)
        vocab = convert_reference_vocab(args.vocab_pt, args.out, source=args.source, image_processor=processor,
                                        overwrite=args.overwrite, max_bytes=args.max_bytes,
                                        command=shlex.join(["vwt-convert-vocab", *args_list]))
    except Exception as err:  # noqa: BLE001 - one clear line
        print(f"vwt-convert-vocab: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    c = vocab.config
    print(f"wrote {args.out}: k={c.k}, patch {c.patch_size}, preprocessing {c.preprocess.processor_type}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
