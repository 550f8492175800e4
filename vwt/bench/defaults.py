"""The methods a benchmark runs when none are given, and filling in what a short spec leaves out.

Full defaults (any model): ``base``; ``vwt`` with the k=1000 vocabulary at thresholds 0.1 and 0.4 and
the k=100 vocabulary at 0.4 with pad, bucket and pack batching; ``intra`` keeping 1/3 and 1/2 of the
patches; ``tome`` at two ``r`` (8 and 13 where they fit the model, else ~1/2 and ~4/5 of the patches
merged over all layers); ``q8``; ``dynamicvit`` only with a trained predictor. Vocabularies are the
shipped ones that fit the model, else built on the fly from the sample photos.
"""

from __future__ import annotations

from pathlib import Path

from ..methods.registry import Method, load
from .models import BenchModel
from .vocabs import matching_vocabularies, resolve_vocabulary

__all__ = ["DEFAULT_VOCAB_SIZES", "default_methods", "tome_r_values", "complete_method"]

#: Vocabulary sizes the default methods use (largest first).
DEFAULT_VOCAB_SIZES = (1000, 100)


def tome_r_values(num_patches: int, num_layers: int) -> list[int]:
    """ToMe's ``r`` for a model: 8 and 13 where they fit (ViT-B/16: 49% and 80% of 196 merged)."""
    most = (num_patches - 1) // num_layers  # ToMe needs at least one patch token left
    if 13 <= most:
        return [8, 13]
    values = {max(1, min(most, round(f * num_patches / num_layers))) for f in (0.5, 0.8)}
    return sorted(values)


def complete_method(method: Method, bench: BenchModel, build_dir: str | Path | None) -> Method:
    """A ``vwt`` method without ``vocab`` gets the model's default vocabulary; ``k=N`` picks its size."""
    if method.name != "vwt" or "vocab" in method.options and "k" not in method.options:
        return method
    options = dict(method.options)
    if "vocab" in options:
        raise ValueError("give vwt either vocab= or k=, not both")
    k = options.pop("k", None)
    if k is None:
        found = matching_vocabularies(bench)
        k = max(found) if found else DEFAULT_VOCAB_SIZES[0]
    options["vocab"], _ = resolve_vocabulary(bench, int(k), build_dir)
    return load("vwt", **options)


def default_methods(bench: BenchModel, *, quick: bool = False, build_dir: str | Path | None = None,
                    dynamicvit_predictor: str | None = None) -> list[Method]:
    """The default comparison for ``bench`` (a small one with ``quick``)."""
    vocabs = []
    for k in DEFAULT_VOCAB_SIZES[-1:] if quick else DEFAULT_VOCAB_SIZES:
        vocab, _ = resolve_vocabulary(bench, k, build_dir)
        if vocab not in vocabs:
            vocabs.append(vocab)
    large, small = vocabs[0], vocabs[-1]
    r_values = tome_r_values(bench.num_patches, bench.num_layers)
    methods = [load("base")]
    if quick:
        methods += [load("vwt", vocab=small, threshold=0.4),
                    load("vwt", vocab=small, threshold=0.4, batching="pack"),
                    load("intra", keep=0.5), load("tome", r=r_values[0]), load("q8")]
    else:
        methods += [load("vwt", vocab=large, threshold=0.1), load("vwt", vocab=large, threshold=0.4)]
        if small != large:
            methods.append(load("vwt", vocab=small, threshold=0.4))
        methods += [load("vwt", vocab=small, threshold=0.4, batching=b) for b in ("bucket", "pack")]
        methods += [load("intra", keep=0.33), load("intra", keep=0.5)]
        methods += [load("tome", r=r) for r in r_values] + [load("q8")]
    if dynamicvit_predictor is not None:
        methods.append(load("dynamicvit", predictor=dynamicvit_predictor))
    return methods
