"""8-bit weights for the Linear layers: dynamic int8 on CPU, bitsandbytes LLM.int8 on CUDA."""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import nn

__all__ = ["quantize_int8"]

logger = logging.getLogger(__name__)


def _quantize_cpu(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's eager quantization warns about its planned move to torchao
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, UserWarning))
        return quantize_dynamic(copy.deepcopy(model).float().cpu(), {nn.Linear}, dtype=torch.qint8)


def _quantize_cuda(model: nn.Module, device: torch.device) -> nn.Module:  # pragma: no cover - needs a GPU
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise ImportError("8-bit quantization on CUDA needs bitsandbytes: pip install bitsandbytes") from err
    quantized = copy.deepcopy(model).half()
    linears = [(name, module) for name, module in quantized.named_modules() if isinstance(module, nn.Linear)]
    for name, linear in linears:
        parent_name, _, child = name.rpartition(".")
        parent = quantized.get_submodule(parent_name) if parent_name else quantized
        int8 = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                   has_fp16_weights=False, threshold=6.0)
        int8.weight = bnb.nn.Int8Params(linear.weight.data, requires_grad=False, has_fp16_weights=False)
        if linear.bias is not None:
            int8.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        setattr(parent, child, int8)
    return quantized.to(device)


def quantize_int8(model: nn.Module, device: str | torch.device | None = None) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` in 8 bits; the original is left untouched.

    On CPU: PyTorch dynamic quantization (int8 weights, activations quantized per batch, int8 GEMMs).
    On CUDA: bitsandbytes ``Linear8bitLt`` (LLM.int8), only where CUDA and bitsandbytes are present.
    Module names are unchanged, so the copy runs through the same adapters, tokenizers and ToMe.

    Args:
        model: a Hugging Face model.
        device: where the quantized copy runs (default: where ``model`` is).
    """
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    if device.type == "cpu":
        return _quantize_cpu(model).eval()
    if device.type == "cuda":
        return _quantize_cuda(model, device).eval()
    raise ValueError(f"8-bit quantization supports cpu and cuda devices, not {device.type}")
