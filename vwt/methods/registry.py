"""One call shape for every method: ``load(name, **options).bind(model)(pixel_values)``.

Methods: ``base`` (the unmodified model), ``vwt`` (visual-word tokenizer), ``intra`` (intra-image
tokenizer), ``tome`` (Token Merging), ``dynamicvit`` (learned pruning) and ``q8`` (8-bit Linear layers).
A bound method returns a :class:`MethodResult` with the model's usual outputs and the sequence
length each layer processed, so a benchmark can treat them all alike.

Example::

    runner = vwt.methods.load("tome", r=13).bind(model)
    result = runner(pixel_values)
    result.outputs.pooler_output, result.tokens_per_layer
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..encoders import VisualWordModel, adapter_for
from ..encoders.batching import BUCKET_MAX_IMAGES, plan_auto_buckets, processed_length
from ..encoders.masks import with_prefix_sizes
from ..validate import check_pixel_values
from .result import MethodResult, concat_results
from .tokenizers import visual_word_tokenizer

__all__ = ["METHODS", "DENSE_METHODS", "Method", "MethodResult", "Runner", "dense_groups", "load",
           "visual_word_tokenizer"]

logger = logging.getLogger(__name__)


DENSE_METHODS = ("base", "tome", "dynamicvit", "q8")
"""The methods that run a batch as one dense tensor (every image the same length on entry). On CPU their
runner splits a batch of more than :data:`~vwt.encoders.batching.BUCKET_MAX_IMAGES` images into groups of
at most that many (:func:`dense_groups`), as ``"auto"`` groups the other methods' batches: smaller groups'
activations stay in cache (measured on DINOv2 ViT-S/14, batch 32, one thread: base 1.10x, ToMe r=13 6-10%
faster; ``scripts/bench_latency.py --batch 32``), so every method of a comparison gets the same. Each image
gets the result of the whole batch, except under ``q8``, whose dynamic quantization scales activations per
batch: there each group gets the result it gets as a batch of its own."""


def dense_groups(batch_size: int, device: torch.device | str) -> list[torch.Tensor] | None:
    """The consecutive groups a dense method's batch runs in: ``"auto"``'s plan for equal lengths
    (:func:`~vwt.encoders.batching.plan_auto_buckets`), on CPU and above
    :data:`~vwt.encoders.batching.BUCKET_MAX_IMAGES` images; None (the whole batch at once) otherwise."""
    if torch.device(device).type != "cpu" or batch_size <= BUCKET_MAX_IMAGES:
        return None
    return plan_auto_buckets(torch.ones(batch_size, dtype=torch.long), device, 1)  # equal lengths: in batch order


@dataclass
class Runner:
    """A method bound to a model: call it on ``pixel_values`` ``[B, C, H, W]``.

    A method of :data:`DENSE_METHODS` runs a large batch on CPU in groups (:func:`dense_groups`), the
    results joined by :func:`~vwt.methods.result.concat_results`; ``run`` is the method on one group.
    """

    method: Method
    model: nn.Module
    run: Callable[[torch.Tensor], MethodResult] = field(repr=False)

    def __call__(self, pixel_values: torch.Tensor) -> MethodResult:
        check_pixel_values(pixel_values)  # every method, the unmodified model included, refuses the same inputs
        groups = None
        if self.method.name in DENSE_METHODS:
            groups = dense_groups(len(pixel_values), next(self.model.parameters()).device)
        if groups is None:
            return self.run(pixel_values)
        return concat_results([self.run(pixel_values[index]) for index in groups])


def _full_length(model: nn.Module, pixel_values: torch.Tensor) -> int:
    adapter = adapter_for(model)
    h, w = pixel_values.shape[-2:]
    return adapter.num_prefix_tokens + (h // adapter.patch_size) * (w // adapter.patch_size)


def _num_layers(model: nn.Module) -> int:
    return len(adapter_for(model).layers)


def _bind_base(model: nn.Module, **options: Any) -> Callable[[torch.Tensor], MethodResult]:
    if options:
        raise TypeError(f"base takes no options, got {sorted(options)}")

    # Models whose own forward needs text inputs, and timm / open_clip models (whose forward takes no
    # pixel_values= and returns bare tensors), run their image path through the adapter (exact: tested).
    adapter = adapter_for(model)
    through_adapter = adapter.needs_text_inputs or not adapter.forward_takes_pixel_values
    forward = VisualWordModel(model) if through_adapter else None

    device = next(model.parameters()).device

    def run(pixel_values: torch.Tensor) -> MethodResult:
        length = _full_length(model, pixel_values)
        pixel_values = pixel_values.to(device)
        outputs = forward({"pixel_values": pixel_values}) if through_adapter else model(pixel_values=pixel_values)
        return MethodResult(outputs, (length,) * _num_layers(model),
                            torch.full((len(pixel_values),), length, dtype=torch.long))

    return run


def _bind_tokenizer(model: nn.Module, tokenizer: Any, batching: str,
                    proportional_attention: bool | float) -> Callable[[torch.Tensor], MethodResult]:
    wrapped = VisualWordModel(model, batching=batching, proportional_attention=proportional_attention)
    prefix = wrapped.adapter.num_prefix_tokens

    def run(pixel_values: torch.Tensor) -> MethodResult:
        batch = tokenizer(pixel_values=pixel_values)
        outputs = wrapped(batch)
        lengths = batch["num_tokens"] + prefix
        mode, num_buckets = wrapped.batching_for(lengths)
        buckets = wrapped.buckets_for(lengths, num_buckets) if mode == "bucket" and len(lengths) > 1 else None
        length = processed_length(lengths, mode, capacity=wrapped.pack_capacity or _full_length(model, pixel_values),
                                  num_buckets=num_buckets, buckets=buckets)
        return MethodResult(outputs, (length,) * _num_layers(model), lengths,
                            token_sizes=with_prefix_sizes(batch["token_sizes"], prefix))

    return run


def _bind_vwt(model: nn.Module, vocab: Any = None, threshold: float | None = None, batching: str = "auto",
              proportional_attention: bool | float = True, max_tokens: int | None = None,
              keep: float | None = None, connected: bool | None = None,
              window: int | None = None, norm_band: float | None = None,
              min_keep: float | None = None) -> Callable[[torch.Tensor], MethodResult]:
    tokenizer = visual_word_tokenizer(model, vocab, threshold, max_tokens, keep, connected, window, norm_band,
                                      min_keep)
    return _bind_tokenizer(model, tokenizer, batching, proportional_attention)


def _bind_intra(model: nn.Module, keep: float | None = None, batching: str = "auto",
                proportional_attention: bool | float = True,
                max_tokens: int | None = None) -> Callable[[torch.Tensor], MethodResult]:
    from ..tokenize.intra import IntraImageTokenizer

    adapter = adapter_for(model)
    tokenizer = IntraImageTokenizer(keep, adapter.patch_size, num_channels=adapter.num_channels, max_tokens=max_tokens)
    return _bind_tokenizer(model, tokenizer, batching, proportional_attention)


def _bind_tome(model: nn.Module, **options: Any) -> Callable[[torch.Tensor], MethodResult]:
    from .tome import ToMe

    return ToMe(model, **options)


def _bind_dynamicvit(model: nn.Module, predictor: Any = None, keep: float | None = None,
                     **options: Any) -> Callable[[torch.Tensor], MethodResult]:
    from .dynamicvit import DynamicViT, DynamicViTConfig

    if "keep_ratio" in options:
        if keep is not None:
            raise TypeError("dynamicvit: pass keep= only (keep_ratio is its old name)")
        warnings.warn("dynamicvit keep_ratio= is deprecated: use keep= (the same fraction)", DeprecationWarning,
                      stacklevel=3)
        keep = options.pop("keep_ratio")
    if predictor is not None:
        if keep is not None or options:
            raise ValueError("dynamicvit: the predictor directory fixes its config; drop keep and other options")
        dvit = DynamicViT.from_pretrained(predictor, model)
    else:
        logger.warning("dynamicvit without trained predictor weights: pruning decisions are random")
        dvit = DynamicViT(model, DynamicViTConfig(keep=0.7 if keep is None else keep, **options))

    return dvit


def _bind_vwt_tome(model: nn.Module, **options: Any) -> Callable[[torch.Tensor], MethodResult]:
    from .hybrids import bind_vwt_tome

    return bind_vwt_tome(model, **options)


def _bind_q8(model: nn.Module, **options: Any) -> Callable[[torch.Tensor], MethodResult]:
    from .quantize import quantize_int8

    return _bind_base(quantize_int8(model, **options))


METHODS: dict[str, Callable[..., Callable[[torch.Tensor], MethodResult]]] = {
    "base": _bind_base,
    "vwt": _bind_vwt,
    "intra": _bind_intra,
    "tome": _bind_tome,
    "vwt+tome": _bind_vwt_tome,
    "dynamicvit": _bind_dynamicvit,
    "q8": _bind_q8,
}
"""Each method's name to its binder: ``METHODS[name](model, **options)`` returns the function that runs it
on ``pixel_values``. :func:`load` refuses a name that is not a key here."""


@dataclass(frozen=True)
class Method:
    """A method and its options, not yet bound to a model."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short label for tables and plots, e.g. ``tome(r=13)``."""
        shown = {k: v for k, v in self.options.items() if isinstance(v, (int, float, str, tuple)) and k != "vocab"}
        if "vocab" in self.options and isinstance(self.options["vocab"], str):
            shown = {"vocab": self.options["vocab"].rstrip("/").split("/")[-1], **shown}
        return self.name + (f"({', '.join(f'{k}={v}' for k, v in shown.items())})" if shown else "")

    def bind(self, model: nn.Module) -> Runner:
        """Prepare the method for ``model`` (quantize, load a predictor, ...) once."""
        adapter_for(model)  # a clear error for an unsupported model, before any work
        return Runner(self, model, METHODS[self.name](model, **self.options))


def load(name: str, **options: Any) -> Method:
    """A method by name with its options.

    Args:
        name: one of ``base``; ``vwt`` (``vocab=``, ``threshold=`` or a token budget ``max_tokens=`` /
            ``keep=``, ``connected=``, ``window=``, ``norm_band=``, ``min_keep=``, ``batching=``,
            ``proportional_attention=``); ``intra`` (``keep=`` or ``max_tokens=``, ``batching=``,
            ``proportional_attention=``); ``tome`` (``r=``, ``schedule=``);
            ``vwt+tome`` (the ``vwt`` tokenizer's options and ToMe's, see
            :func:`vwt.methods.hybrids.bind_vwt_tome`); ``dynamicvit`` (``predictor=`` directory, or ``keep=``
            for an untrained predictor); ``q8``. ``batching`` is ``auto`` (the default), ``pad``, ``bucket``,
            ``pack`` or ``ragged`` (see :class:`vwt.encoders.VisualWordModel`).

    Everywhere ``keep`` is a fraction in ``(0, 1]`` and ``max_tokens`` a count of an image's tokens
    (prefix tokens such as CLS not counted).
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return Method(name, dict(options))
