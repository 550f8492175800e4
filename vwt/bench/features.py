"""The one vector per image that fidelity and accuracy compare: the model's pooled output."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["pooled_features", "feature_name", "cosine_to_reference"]

# In order of preference: CLIP's projected embedding, the pooled output, classification logits, raw CLS.
_FIELDS = ("image_embeds", "pooler_output", "logits")


def feature_name(outputs: Any) -> str:
    """Which field :func:`pooled_features` reads from ``outputs``."""
    for name in _FIELDS:
        if getattr(outputs, name, None) is not None:
            return name
    return "last_hidden_state[:, 0]"


def pooled_features(outputs: Any) -> torch.Tensor:
    """``[B, D]`` float32 on CPU: ``image_embeds``, else ``pooler_output``, else ``logits``, else the first token."""
    for name in _FIELDS:
        value = getattr(outputs, name, None)
        if value is not None:
            return value.detach().float().cpu()
    return outputs.last_hidden_state[:, 0].detach().float().cpu()


def cosine_to_reference(features: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Per-image cosine similarity of ``[N, D]`` features to the base model's ``[N, D]``: mean, median, min."""
    cosine = torch.nn.functional.cosine_similarity(features.double(), reference.double(), dim=-1)
    return {"mean": float(cosine.mean()), "median": float(cosine.quantile(0.5)), "min": float(cosine.min())}
