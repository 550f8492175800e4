"""The accuracy-vs-throughput frontier: every method's knob swept on one model, measured side by side.

:func:`frontier_methods` lists the sweep (ToMe ``r``; VWT thresholds, with and without connected
groups; a VWT token budget; ``vwt+tome``; intra-image ``keep``; ``q8``). :func:`run_frontier` runs it
on held-out photos (:mod:`vwt.bench.heldout`) with the harness (interleaved timing at batch 1 and 32,
ratios to base from the same rounds) and the Fashion-MNIST linear probe, then :func:`frontier_rows`,
:func:`frontier_table`, the verdicts of :mod:`vwt.bench.verdicts` and the plot of :mod:`vwt.bench.frontier_plot`
summarise it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..methods.registry import Method, load
from .models import BenchModel

__all__ = ["SWEEPS", "ADAPTIVE", "HELDOUT_VOCAB", "IMAGE_SETS", "frontier_methods", "run_frontier", "frontier_rows",
           "frontier_table"]

logger = logging.getLogger(__name__)

#: Knob values per sweep: the default (affordable on 2 CPU cores) and ``full``.
#: ``hybrid`` holds ``vwt+tome``'s ``(keep, r)`` pairs: a token budget at the input (every image the same
#: length, so ToMe's per-layer ``r`` never eats an image that the words already shrank), ToMe inside.
SWEEPS: dict[str, dict[str, tuple]] = {
    "default": {"tome_r": (8, 12, 16, 20), "vwt_threshold": (0.05,), "vwt_connected": (0.01, 0.02, 0.03, 0.05, 0.1),
                "vwt_keep": (0.65,), "hybrid": ((0.85, 8), (0.8, 8), (0.75, 8)), "intra_keep": (0.65,)},
    "full": {"tome_r": (4, 8, 12, 16, 20, 24), "vwt_threshold": (0.02, 0.05, 0.1, 0.2),
             "vwt_connected": (0.01, 0.02, 0.05, 0.1, 0.2), "vwt_keep": (0.5, 0.65, 0.8),
             "hybrid": ((0.9, 8), (0.85, 8), (0.8, 6), (0.8, 8), (0.8, 10), (0.75, 8), (0.7, 8)),
             "intra_keep": (0.5, 0.65, 0.8)},
}


#: The adaptive configurations the mixed set adds: ToMe with a share ``r`` (every image merges that share
#: of its own tokens); VWT with connected groups split by ``window`` blocks and ``norm_band`` bands, some
#: with a ``min_keep`` floor for near-empty images; and ``vwt+tome`` with a threshold at the input and a
#: share ``r`` in the layers. Every ``vwt`` and ``vwt+tome`` entry is run with ``connected=True``.
ADAPTIVE: dict[str, tuple] = {
    "tome_share": (0.08,),
    "vwt": ({"threshold": 0.03, "window": 8}, {"threshold": 0.05, "window": 8}, {"threshold": 0.05, "window": 6},
            {"threshold": 0.1, "window": 8, "norm_band": 1.2}, {"threshold": 0.2, "window": 8, "norm_band": 1.2},
            {"threshold": 0.1, "window": 6, "norm_band": 1.2}, {"threshold": 0.2, "window": 6, "norm_band": 1.2},
            {"threshold": 0.1, "window": 8, "norm_band": 1.2, "min_keep": 0.2},
            {"threshold": 0.2, "window": 8, "norm_band": 1.2, "min_keep": 0.2}),
    "hybrid": ({"threshold": 0.02, "r": 0.025}, {"threshold": 0.03, "r": 0.02},
               {"threshold": 0.02, "window": 8, "r": 0.03}, {"threshold": 0.02, "window": 6, "r": 0.03},
               {"threshold": 0.03, "window": 8, "r": 0.02}),
}


def frontier_methods(vocab: str, num_patches: int, num_layers: int, full: bool = False,
                     adaptive: bool = True) -> list[Method]:
    """The sweep for a model with ``num_patches`` patches and ``num_layers`` layers (ToMe ``r`` capped to fit);
    ``adaptive`` adds :data:`ADAPTIVE`."""
    knobs = SWEEPS["full" if full else "default"]
    most = (num_patches - 1) // num_layers  # ToMe must leave one patch token
    rs = {min(r, most) for r in knobs["tome_r"]}
    if adaptive:  # every int r near the largest: interpolating ToMe where its curve bends most, not along a chord
        rs |= set(range(max(1, most - 5), most + 1))
    rs = sorted(rs)
    methods = [load("base")]
    methods += [load("tome", r=r) for r in rs]
    methods += [load("vwt", vocab=vocab, threshold=t, batching="pack") for t in knobs["vwt_threshold"]]
    methods += [load("vwt", vocab=vocab, threshold=t, connected=True, batching="pack") for t in knobs["vwt_connected"]]
    methods += [load("vwt", vocab=vocab, keep=k) for k in knobs["vwt_keep"]]
    methods += [load("vwt+tome", vocab=vocab, keep=keep, r=min(r, most)) for keep, r in knobs["hybrid"]]
    if adaptive:
        methods += [load("tome", r=share) for share in ADAPTIVE["tome_share"]]
        methods += [load("vwt", vocab=vocab, connected=True, batching="pack", **o) for o in ADAPTIVE["vwt"]]
        methods += [load("vwt+tome", vocab=vocab, connected=True, **o) for o in ADAPTIVE["hybrid"]]
    methods += [load("intra", keep=k, batching="pack") for k in knobs["intra_keep"]]
    return methods + [load("q8")]


#: A ``vocab`` option that :func:`run_frontier` replaces by the held-out vocabulary it builds.
HELDOUT_VOCAB = "heldout"
IMAGE_SETS = ("uniform", "mixed")


def _heldout_set(bench: BenchModel, out: Path, image_set: str, k: int, crops: int, max_per_source: int | None,
                 seed: int) -> tuple[Path, Any, dict[str, Any]]:
    """The vocabulary, the held-out pixel values and their description for ``image_set``."""
    from ..vocab.data import sample_images
    from .heldout import build_heldout_vocabulary, heldout_pixel_values, split_photos

    if image_set == "uniform":
        vocab_photos, eval_photos = split_photos(sample_images())
        vocab = build_heldout_vocabulary(vocab_photos, k, bench.patch_size, bench.image_processor, out / "vocabulary")
        pixel_values, names = heldout_pixel_values(eval_photos, bench.image_processor, crops)
        return vocab, pixel_values, {
            "source": "sample (held out)", "count": len(names), "names": names,
            "vocabulary_photos": [name for name, _ in vocab_photos],
            "note": "the vocabulary never saw these photos; batches cycle through the images"}
    from .mixed import mixed_items, mixed_pixel_values, open_item, split_mixed

    vocab_items, held = split_mixed(mixed_items(), seed, max_per_source)
    vocab = build_heldout_vocabulary([(f"{s}/{n}", open_item((s, n, w))) for s, n, w in vocab_items], k,
                                     bench.patch_size, bench.image_processor, out / "vocabulary-mixed", seed=seed,
                                     scales=(1.0,))
    pixel_values, names, sources = mixed_pixel_values(held, bench.image_processor)
    return vocab, pixel_values, {
        "source": "mixed (held out)", "count": len(names), "names": names, "sources": sources,
        "vocabulary_images": [f"{s}/{n}" for s, n, _ in vocab_items],
        "split": {"seed": seed, "max_heldout_per_source": max_per_source},
        "note": "vwt.bench.mixed: each source split in two with a seeded shuffle; the vocabulary saw the other "
                "half (each image plain and mirrored); one center crop per held-out image"}


def _with_vocab(method: Method, vocab: Path) -> Method:
    if method.options.get("vocab") != HELDOUT_VOCAB:
        return method
    return Method(method.name, {**method.options, "vocab": str(vocab)})


def run_frontier(bench: BenchModel, out: str | Path, *, image_set: str = "uniform", full: bool = False, k: int = 256,
                 crops: int = 5, max_per_source: int | None = 40, seed: int = 0, repeats: int = 2,
                 batch_sizes: Sequence[int] = (1, 32), probe_train: int = 1000, probe_test: int = 300,
                 probe: bool = True, fashion_mnist_dir: str | None = None, methods: Sequence[Method] | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Run the sweep on ``bench``'s model; a results dict as :func:`vwt.bench.run_benchmark`'s, plus accuracy.

    Args:
        bench: the model and its processor.
        out: where the held-out vocabulary is built (``out/vocabulary``, ``out/vocabulary-mixed``).
        image_set: ``"uniform"``: crops of the held-out sample photos, a vocabulary from the others
            (:mod:`vwt.bench.heldout`); ``"mixed"``: objects on white, interiors, wallpapers and photos
            (:mod:`vwt.bench.mixed`), a vocabulary from the other half of each source.
        full: the fuller sweep of :data:`SWEEPS`.
        k: vocabulary size.
        crops: crops per held-out photo (1-5; uniform set).
        max_per_source, seed: held-out images per source and the split's seed (mixed set).
        repeats, batch_sizes: timed rounds and batch sizes (the first gives tokens and fidelity).
        probe_train, probe_test, probe, fashion_mnist_dir: the Fashion-MNIST linear probe.
        methods: replace the sweep (e.g. a tiny one in tests); ``vocab="heldout"`` stands for the held-out
            vocabulary built here.
    """
    from ..preprocess import preprocess_config
    from .accuracy import linear_probe
    from .harness import bind_methods, run_benchmark
    from .report import attach_accuracy

    if image_set not in IMAGE_SETS:
        raise ValueError(f"image_set must be one of {', '.join(IMAGE_SETS)}, got {image_set!r}")
    vocab, pixel_values, images = _heldout_set(bench, Path(out), image_set, k, crops, max_per_source, seed)
    if methods is None:
        methods = frontier_methods(HELDOUT_VOCAB, bench.num_patches, bench.num_layers, full)
    bound = bind_methods(bench.model, [_with_vocab(m, vocab) for m in methods])
    results = run_benchmark(bench.model, bound, pixel_values, batch_sizes=batch_sizes, repeats=repeats,
                            progress=progress)
    results["images"] = images
    results["vocabulary"] = {"path": str(vocab), "k": k}
    if probe:
        preprocess = preprocess_config(bench.image_processor)
        try:
            accuracy = linear_probe(bound.runners, base_label=bound.base, image_size=bench.input_size,
                                    image_mean=preprocess.image_mean, image_std=preprocess.image_std,
                                    train_size=probe_train, test_size=probe_test, data_dir=fashion_mnist_dir,
                                    device=bench.device, same_outputs=bound.same_outputs(), progress=progress)
            attach_accuracy(results, "linear_probe", accuracy)
        except FileNotFoundError as err:
            logger.warning("linear probe skipped: %s", err)
    return results


def frontier_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per configuration: tokens per layer (ratio), latency at the smallest batch size and
    throughput at the largest (``throughput_batch``) as ratios to base, CLS cosine (mean, min) and probe
    retention."""
    sizes = [str(b) for b in results["settings"]["batch_sizes"]]
    small, large = sizes[0], sizes[-1]
    rows = []
    for entry in results["methods"]:
        if entry["status"] != "ok":
            continue
        probe = entry.get("accuracy", {}).get("linear_probe", {})
        rows.append({
            "label": entry["label"], "method": entry["method"],
            "tokens_per_layer": entry["tokens"]["per_layer_mean"],
            "tokens_ratio": entry["tokens"]["per_layer_ratio_vs_base"],
            "latency_ratio": entry["batches"][small]["time_ratio_vs_base"],
            "throughput_ratio": entry["batches"][large]["speedup_vs_base"], "throughput_batch": int(large),
            "cosine": entry["fidelity"]["cosine_mean"], "cosine_min": entry["fidelity"]["cosine_min"],
            "retention": probe.get("retention_vs_base"),
        })
    return rows


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def frontier_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    large = rows[0].get("throughput_batch", 32) if rows else 32
    lines = [f"| configuration | tokens/layer (ratio) | latency @b1 (× base) | throughput @b{large} (× base) "
             "| CLS cosine (min) | probe retention |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['tokens_per_layer']:.1f} ({r['tokens_ratio']:.3f}) "
                     f"| ×{_fmt(r['latency_ratio'], 2)} | ×{_fmt(r['throughput_ratio'], 2)} "
                     f"| {r['cosine']:.4f} ({r['cosine_min']:.3f}) | {_fmt(r['retention'])} |")
    return "\n".join(lines)
