"""ONNX export of the model side: an unmodified Hugging Face model running on a tokenizer's reduced tokens.

The tokenizer stays in Python (it is cheap: well under 1% of a ViT-B/16 forward); what is exported is
everything after it: the model's patch embedding, the merge of patches into tokens, the model's layers
with the padding mask, and its usual head. The graph has a dynamic batch axis and a dynamic token axis,
so one file serves every batch size and every token count (with or without a token budget).

    from vwt import VisualWordModel, VisualWordTokenizer
    from vwt.encoders.export import onnx, onnx_inputs
    import onnxruntime

    batch = tokenizer(images)
    names = onnx(VisualWordModel(model), "vwt-clip.onnx", batch)
    session = onnxruntime.InferenceSession("vwt-clip.onnx")
    last_hidden_state, pooler_output = session.run(None, onnx_inputs(batch))

Why the ``torch.export``-based exporter (``dynamo=True``, needs ``onnxscript``): it is PyTorch's current
exporter (the TorchScript one is deprecated since PyTorch 2.9), it keeps symbolic batch and token sizes
through the merge's index arithmetic, and it translates ``index_add`` correctly; the TorchScript exporter
silently exported a wrong ``index_add`` for a batch size other than the example's (tried, torch 2.13).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["onnx", "onnx_inputs", "ONNX_INPUTS"]

logger = logging.getLogger(__name__)

ONNX_INPUTS = ("pixel_values", "patch_to_token", "attention_mask", "token_sizes")
"""The batch keys the exported graph takes, in order (``token_sizes`` only where the batch has it)."""


class _TensorOutputs(nn.Module):
    """A ``VisualWordModel`` with a flat tuple of tensors out (what an ONNX graph returns), by name.

    Args:
        wrapped: a ``VisualWordModel`` (an ``nn.Module`` holding the model).
        input_names: the batch keys passed on as keyword arguments, in order.
        output_names: the keys of the model's output object to return, in order.
    """

    def __init__(self, wrapped: nn.Module, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)

    def forward(self, pixel_values: torch.Tensor, patch_to_token: torch.Tensor, attention_mask: torch.Tensor,
                token_sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        given = {"pixel_values": pixel_values, "patch_to_token": patch_to_token, "attention_mask": attention_mask,
                 "token_sizes": token_sizes}
        outputs = self.wrapped(**{name: given[name] for name in self.input_names})
        return tuple(outputs[name] for name in self.output_names)


def _as_wrapped(model: Any) -> Any:
    """A ``VisualWordModel`` with ``batching="pad"`` around ``model`` (or around the model of a
    ``VisualWordModel`` with ``"auto"``, its other settings kept): the one mode a static graph can hold."""
    from . import VisualWordModel

    if not isinstance(model, VisualWordModel):
        return VisualWordModel(model, batching="pad")
    if model.batching != "auto":
        return model
    return VisualWordModel(model.model, batching="pad", proportional_attention=model.proportional_attention)


def _tensor_output_names(outputs: Any) -> list[str]:
    return [name for name, value in outputs.items() if isinstance(value, torch.Tensor)]


def onnx_inputs(batch: Mapping[str, Any], input_names: Sequence[str] | None = None) -> dict[str, Any]:
    """A tokenizer's batch as onnxruntime feeds: the graph's inputs as NumPy arrays.

    Args:
        batch: the tokenizer's output (``pixel_values``, ``patch_to_token``, ``attention_mask``, ...).
        input_names: the graph's inputs (default: those of :data:`ONNX_INPUTS` that the batch holds).
    """
    names = input_names or [name for name in ONNX_INPUTS if name in batch]
    return {name: torch.as_tensor(batch[name]).detach().cpu().numpy() for name in names}


def onnx(model: nn.Module | Any, path: str | os.PathLike, example_batch: Mapping[str, Any], *,
         output_names: Sequence[str] | None = None, opset_version: int | None = None,
         external_data: bool = False) -> list[str]:
    """Export the model side (embedding, merge, layers, head) on reduced tokens to an ONNX file.

    The graph's inputs are the batch keys of :data:`ONNX_INPUTS` that ``example_batch`` holds
    (``pixel_values`` ``[B, C, H, W]``, ``patch_to_token`` ``[B, N]`` int64, ``attention_mask`` ``[B, 1 + T]``
    int64, ``token_sizes`` ``[B, T]``); ``B`` and ``T`` are dynamic, ``C``, ``H`` and ``W`` are fixed to the
    example's. Its outputs are the tensors of the model's usual output object (e.g. ``last_hidden_state``,
    ``pooler_output``), in that object's order. The batch-1 case needs no padding mask at all, but the
    graph always takes one, so batches with padding run through the same file.

    Args:
        model: a supported Hugging Face model, or a ``VisualWordModel`` around one (its batching must be
            ``"auto"``, which runs ``"pad"`` while tracing, or ``"pad"``: bucketing, packing and ragged
            batches plan on the data, which a static graph cannot).
        path: the ``.onnx`` file to write.
        example_batch: a tokenizer's output to trace with; a batch of 1 is repeated to 2 images, since the
            exporter would otherwise fix the batch axis to 1.
        output_names: the output object's keys to export (default: all its tensors).
        opset_version: ONNX opset (default: the exporter's).
        external_data: write the weights to a ``.data`` file beside ``path`` (needed above 2 GB).

    Returns:
        The graph's output names, in order.
    """
    wrapped = _as_wrapped(model)
    if getattr(wrapped, "batching", "pad") not in ("auto", "pad"):
        raise ValueError(f"only batching='pad' (or 'auto') exports to a static graph, got {wrapped.batching!r}")
    input_names = [name for name in ONNX_INPUTS if example_batch.get(name) is not None]
    if input_names[:3] != list(ONNX_INPUTS[:3]):
        raise ValueError(f"the example batch needs {', '.join(ONNX_INPUTS[:3])}; it has {sorted(example_batch)}")
    inputs = [torch.as_tensor(example_batch[name]) for name in input_names]
    if len(inputs[0]) == 1:  # a batch axis traced at size 1 would be fixed to 1
        inputs = [x.expand(2, *x.shape[1:]).contiguous() for x in inputs]
    device = next(wrapped.parameters()).device
    inputs = [x.to(device) for x in inputs]
    with torch.no_grad():
        example_outputs = wrapped(**dict(zip(input_names, inputs)))
    output_names = list(output_names or _tensor_output_names(example_outputs))
    module = _TensorOutputs(wrapped, input_names, output_names).eval()
    batch, tokens = torch.export.Dim("batch", min=1), torch.export.Dim("tokens", min=1)
    axes = {"pixel_values": {0: batch}, "patch_to_token": {0: batch},
            "attention_mask": {0: batch, 1: tokens + 1}, "token_sizes": {0: batch, 1: tokens}}
    dynamic_shapes = tuple(axes[name] for name in input_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("exporting %s to %s (inputs %s, outputs %s)", type(wrapped.model).__name__, path, input_names,
                output_names)
    with torch.no_grad():
        torch.onnx.export(module, tuple(inputs), path, dynamo=True, input_names=input_names,
                          output_names=output_names, dynamic_shapes=dynamic_shapes, opset_version=opset_version,
                          external_data=external_data)
    return output_names
