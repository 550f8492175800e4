"""FLOPs of one call with ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts 2).

``FlopCounterMode`` counts matrix products, convolutions and the CUDA attention kernels. Two gaps are
filled here: the CPU fused attention kernel ``_scaled_dot_product_flash_attention_for_cpu`` (what SDPA
runs on CPU, with or without a mask) gets the same formula as the CUDA kernels, ``4·B·H·Sq·Sk·d``.
What it still cannot see are quantized kernels (``q8``'s int8 GEMMs): the harness counts those on the
float model instead and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["attention_flops", "count_flops", "EXTRA_FLOP_FORMULAS"]


def attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
                    **kwargs: Any) -> int:
    """FLOPs of ``Q·Kᵀ`` and ``P·V`` for ``[B, H, Sq, d]`` queries and ``[B, Hk, Sk, d]`` keys.

    ``2·B·H·Sq·Sk·d + 2·B·H·Sq·Sk·dv`` (key/value heads broadcast to the query heads).
    """
    b, h, s_q, d = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * d + 2 * b * h * s_q * s_k * d_v


EXTRA_FLOP_FORMULAS: dict[Any, Callable[..., int]] = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    EXTRA_FLOP_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = attention_flops


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``(fn(), FLOPs it ran)``."""
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
        result = fn()
    return result, int(counter.get_total_flops())
