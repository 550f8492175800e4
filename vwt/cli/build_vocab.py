"""``vwt-build-vocab``: learn a vocabulary of visual words from a stream of images."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import configure_logging, positive_int, seed_int

__all__ = ["build_vocab_parser", "main"]


def build_vocab_parser() -> argparse.ArgumentParser:
    """The parser of ``vwt-build-vocab``."""
    parser = argparse.ArgumentParser(
        prog="vwt-build-vocab",
        description="Learn a bag of visual words (k-means over image patches in a model's normalized pixel "
        "space) and save it as a vocabulary directory (vocab.safetensors, config.json, README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data",
        required=True,
        help="'sample' (real photos shipped with the installed packages, offline), 'imagenet' "
        "(ILSVRC/imagenet-1k, streamed), a local image folder (recursive), or a datasets hub id",
    )
    parser.add_argument("--k", type=positive_int, required=True, help="number of visual words")
    parser.add_argument("--split", default="train", help="datasets split to stream")
    parser.add_argument("--out", default=None, help="output directory (default: vocab-<data>-k<K>-p<P>)")
    parser.add_argument("--patch-size", type=positive_int, default=16, help="the model's patch size")
    parser.add_argument(
        "--image-processor",
        default=None,
        metavar="ID_DIR_OR_LIBRARY:MODEL",
        help="a model's image processor (hub id or local dir), or a timm / open_clip model's preprocessing "
        "(timm:vit_base_patch16_224, open_clip:ViT-B-16; needs that library, downloads nothing); default: "
        "CLIP ViT-B/16's (shortest side 224 bicubic, center crop 224, CLIP mean/std)",
    )
    parser.add_argument(
        "--patches-per-image", type=positive_int, default=None, help="patches sampled per image (default: all)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=4096, help="patches per MiniBatchKMeans.partial_fit call"
    )
    parser.add_argument("--max-images", type=positive_int, default=None, help="stop after this many images")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of patch sampling and k-means (bit-reproducible)")
    parser.add_argument(
        "--num-workers",
        type=int,
        default=None,
        metavar="N",
        help="processes that decode and preprocess images; the words do not depend on it "
        "(default: the CPUs available, at most 8; 0: decode in the main process)",
    )
    parser.add_argument(
        "--images-per-chunk",
        type=positive_int,
        default=16,
        help="images a decoding process handles at a time (a checkpoint must be resumed with the same value)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=None,
        metavar="IMAGES",
        help="save a resumable checkpoint beside --out (OUT.checkpoint.safetensors) every this many images; "
        "Ctrl-C (SIGINT) or SIGTERM always saves one before exiting",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint beside --out (start afresh if there is none); the words equal "
        "those of an uninterrupted build",
    )
    parser.add_argument(
        "--dist-timeout",
        type=positive_float,
        default=600.0,
        metavar="SECONDS",
        help="under torchrun: how long a rank waits for the others before every rank stops with an error",
    )
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                        help="also upload to this hub repo (under torchrun, rank 0 alone uploads)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging and full tracebacks")
    return parser


def _default_out(data: str, k: int, patch_size: int) -> str:
    stem = data.rstrip("/").replace("\\", "/").split("/")[-1] or "data"
    return f"vocab-{stem}-k{k}-p{patch_size}"


def positive_float(text: str) -> float:
    """argparse type: a positive finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _push(vocab: Any, repo_id: str) -> str:
    return vocab.push_to_hub(repo_id)


def main(argv: Sequence[str] | None = None, *, push: Callable[[Any, str], str] = _push) -> int:
    """Entry point of ``vwt-build-vocab``; returns the exit status (0 ok, 1 failure, 2 usage).

    ``push(vocab, repo_id)`` uploads for ``--push-to-hub`` and returns the URL (on rank 0 alone under
    ``torchrun``); a test passes a stand-in.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_vocab_parser().parse_args(args_list)
    configure_logging(args.verbose)
    out = args.out or _default_out(args.data, args.k, args.patch_size)
    try:
        from ..vocab.build import build_vocabulary
        from ..vocab.stream import default_num_workers

        vocab = build_vocabulary(
            args.data,
            args.k,
            split=args.split,
            patch_size=args.patch_size,
            image_processor=args.image_processor,
            patches_per_image=args.patches_per_image,
            batch_size=args.batch_size,
            max_images=args.max_images,
            seed=args.seed,
            out=out,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            command=shlex.join(["vwt-build-vocab", *args_list]),
            num_workers=default_num_workers() if args.num_workers is None else args.num_workers,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            images_per_chunk=args.images_per_chunk,
            dist_timeout=args.dist_timeout,
        )
        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 wrote, reports and pushes
            return 0
        c = vocab.config
        print(
            f"wrote {out}: k={c.k}, patch {c.patch_size}, {c.num_patches} patches from {c.num_images} images "
            f"({c.num_skipped} skipped)"
        )
        if args.push_to_hub:
            print(f"pushed to {push(vocab, args.push_to_hub)}")
    except KeyboardInterrupt:
        from ..vocab.checkpoint import checkpoint_path

        ckpt = checkpoint_path(out)
        if ckpt.exists():
            print(f"vwt-build-vocab: interrupted; checkpoint saved at {ckpt}: rerun the same command with "
                  "--resume to continue", file=sys.stderr)
        else:
            print("vwt-build-vocab: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one clear line, traceback only with --verbose
        if args.verbose:
            raise
        print(f"vwt-build-vocab: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
