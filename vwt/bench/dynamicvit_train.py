"""Training DynamicViT's predictor: the training-mode forward, the paper's losses and a small loop.

The training forward keeps every token and samples hard keep/drop decisions with Gumbel-softmax
(straight-through); dropped tokens are masked out as attention keys by an additive 4D mask passed
to the model's own layers (CLS always kept), so gradients reach the predictor through the mask.

``L = L_task + ratio_weight * L_ratio + kl_weight * L_KL + distill_weight * L_distill`` (Rao et al., 2021):

- ``L_task``: cross-entropy on the labels when the model has classification logits; for a backbone
  without a head, a feature distillation instead (MSE of the CLS token's final features against the
  teacher's).
- ``L_ratio``: per image, ``(mean keep decision - rho**s)**2`` at every stage, averaged over the batch
  and the stages.
- ``L_KL``: ``KL(teacher || student)`` of the logits (0 without logits).
- ``L_distill``: MSE between the student's and the teacher's final features on the tokens the student
  keeps to the end. The features are the last layer's hidden states, the input of the adapter's head
  (the paper uses them after the final norm, which not every family exposes the same way).

The teacher is the unpruned model: the same model when the backbone is frozen, a frozen copy taken
at the start when it trains.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..methods.dynamicvit import DynamicViT, DynamicViTConfig

__all__ = ["DynamicViTTrainOutput", "policy_attention_mask", "forward_train", "dynamicvit_loss", "train_dynamicvit",
           "train_classifier", "evaluate_accuracy", "minibatches"]

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor | None]


@dataclass
class DynamicViTTrainOutput:
    """What a training-mode forward returns (full-length sequences; dropped tokens masked as keys)."""

    outputs: Any  # the adapter's usual output object
    hidden: torch.Tensor  # last layer's hidden states [B, S, D] (the adapter's head input)
    decisions: list[torch.Tensor]  # cumulative hard keep decisions per stage, [B, N] each (straight-through)


def policy_attention_mask(policy: torch.Tensor, dtype: torch.dtype, eps: float = 1e-6) -> torch.Tensor:
    """Additive attention mask hiding dropped tokens as keys (the paper's masked softmax).

    ``policy`` ``[B, S]`` in [0, 1] (CLS included, 1 = kept) -> ``[B, 1, S, S]`` equal to
    ``log(policy_j + (1 - policy_j) * [i == j] + eps)``: each query sees the kept keys and itself.
    ``softmax(a + log(p + eps))`` is the paper's ``exp(a) * p / sum(exp(a) * p)``, and stays
    differentiable in ``p`` where ``p == 0`` (the Gumbel straight-through gradient).
    """
    s = policy.shape[1]
    eye = torch.eye(s, dtype=policy.dtype, device=policy.device)
    keys = policy[:, None, None, :]
    return torch.log(keys + (1.0 - keys) * eye + eps).to(dtype)


def forward_train(dvit: DynamicViT, pixel_values: torch.Tensor, *, tau: float | None = None,
                  interpolate_pos_encoding: bool = False) -> DynamicViTTrainOutput:
    """Training forward: Gumbel-softmax hard decisions, dropped tokens masked out as attention keys."""
    tau = dvit.config.gumbel_tau if tau is None else tau
    hidden = dvit.embed(pixel_values, interpolate_pos_encoding)
    b, n = hidden.shape[0], hidden.shape[1] - dvit.prefix
    stage_of = {layer: s for s, layer in enumerate(dvit.config.prune_layers)}
    prev = torch.ones(b, n, device=hidden.device)
    cls = torch.ones(b, dvit.prefix, device=hidden.device)
    decisions, mask = [], None
    for i, layer in enumerate(dvit.adapter.layers):
        if i in stage_of:
            log_probs = dvit.scores(stage_of[i], hidden, prev)
            prev = F.gumbel_softmax(log_probs, tau=tau, hard=True)[..., 0].to(prev.dtype) * prev
            decisions.append(prev)
            mask = policy_attention_mask(torch.cat([cls, prev], dim=1), hidden.dtype)
        hidden = layer(hidden, mask)
    # The head sees the dropped tokens as padding (matters for pooling heads without CLS, e.g. SigLIP).
    kept = torch.cat([cls, prev.detach()], dim=1).round().long()
    return DynamicViTTrainOutput(dvit.adapter.outputs(hidden, kept), hidden, decisions)


def dynamicvit_loss(student: DynamicViTTrainOutput, teacher_outputs, teacher_hidden: torch.Tensor,
                    labels: torch.Tensor | None, config: DynamicViTConfig, prefix: int = 1) -> dict[str, torch.Tensor]:
    """The paper's loss terms and their weighted sum (key ``"loss"``).

    ``student.hidden`` and ``teacher_hidden`` are ``[B, prefix + N, D]``; ``student.decisions`` are
    ``[B, N]`` per stage; ``labels`` ``[B]`` or None.
    """
    ratios = config.stage_keep
    ratio = sum(((d.mean(dim=1) - r) ** 2).mean() for d, r in zip(student.decisions, ratios)) / len(ratios)
    keep = student.decisions[-1].detach() > 0.5
    s_tokens, t_tokens = student.hidden[:, prefix:][keep], teacher_hidden[:, prefix:][keep]
    distill = F.mse_loss(s_tokens, t_tokens) if len(s_tokens) else student.hidden.new_zeros(())
    logits = getattr(student.outputs, "logits", None)
    zero = student.hidden.new_zeros(())
    if logits is not None:
        task = F.cross_entropy(logits, labels) if labels is not None else zero
        kl = F.kl_div(F.log_softmax(logits, dim=-1), F.log_softmax(teacher_outputs.logits, dim=-1),
                      reduction="batchmean", log_target=True)
    else:
        if prefix:
            s_pool, t_pool = student.hidden[:, 0], teacher_hidden[:, 0]
        else:  # no CLS: mean over the kept tokens
            w = student.decisions[-1].detach().unsqueeze(-1)
            s_pool = (student.hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
            t_pool = (teacher_hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
        task, kl = F.mse_loss(s_pool, t_pool), zero
    loss = task + config.ratio_weight * ratio + config.kl_weight * kl + config.distill_weight * distill
    return {"loss": loss, "task": task, "ratio": ratio, "kl": kl, "distill": distill}


def minibatches(*tensors: torch.Tensor, batch_size: int, generator: torch.Generator | None = None,
                shuffle: bool = True) -> Iterator[tuple[torch.Tensor, ...]]:
    """Endless minibatches of aligned tensors (a fresh permutation every epoch when ``shuffle``)."""
    n = len(tensors[0])
    while True:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            index = order[start:start + batch_size]
            yield tuple(t[index] for t in tensors)


def _cycle(batches: Iterable) -> Iterator:
    """Endless batches: a re-iterable (list, DataLoader) starts over when it runs out; an iterator may not."""
    while True:
        count = 0
        for batch in batches:
            count += 1
            yield batch
        if count == 0:
            raise ValueError("batches ran out: pass a re-iterable (list, DataLoader) or an endless iterator")
        if iter(batches) is batches:
            raise ValueError(f"batches ran out after {count} more batches: pass a re-iterable or an endless iterator")


def _unpack(batch) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch, None
    pixel_values, *rest = batch
    return pixel_values, (rest[0] if rest else None)


def train_dynamicvit(dvit: DynamicViT, batches: Iterable, *, steps: int, lr: float = 1e-3,
                     backbone_lr_scale: float = 0.01, weight_decay: float = 0.05, log_every: int = 10,
                     callback: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train ``dvit.predictor`` (and the backbone when ``dvit.config.train_backbone``) for ``steps`` steps.

    ``batches`` yields ``pixel_values`` or ``(pixel_values, labels)``; a re-iterable one (list,
    ``DataLoader``) starts over when it runs out.
    The backbone learns at ``lr * backbone_lr_scale`` (the paper's 0.01x). Leaves the predictor and
    the model in eval mode. Returns one dict of loss terms per step.
    """
    config, model = dvit.config, dvit.model
    device = next(model.parameters()).device
    teacher = DynamicViT(copy.deepcopy(model).eval().requires_grad_(False), config) if config.train_backbone else dvit
    groups = [{"params": list(dvit.predictor.parameters()), "lr": lr}]
    if config.train_backbone:
        groups.append({"params": [p for p in model.parameters() if p.requires_grad], "lr": lr * backbone_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    frozen = [] if config.train_backbone else [p for p in model.parameters() if p.requires_grad]
    for param in frozen:
        param.requires_grad_(False)
    dvit.predictor.train()
    model.train(config.train_backbone)
    history: list[dict[str, float]] = []
    stream = _cycle(batches)
    try:
        for step in range(1, steps + 1):
            pixel_values, labels = _unpack(next(stream))
            pixel_values = pixel_values.to(device)
            labels = labels.to(device) if labels is not None else None
            with torch.no_grad():
                t_out, t_hidden = teacher.forward_full(pixel_values)
            student = forward_train(dvit, pixel_values)
            terms = dynamicvit_loss(student, t_out, t_hidden, labels, config, dvit.prefix)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            record = {k: float(v.detach()) for k, v in terms.items()}
            record["keep"] = float(student.decisions[-1].detach().mean())
            history.append(record)
            if callback is not None:
                callback(step, record)
            if log_every and (step % log_every == 0 or step == 1 or step == steps):
                logger.info("step %d/%d loss %.4f task %.4f ratio %.4f kl %.4f distill %.4f keep %.3f", step, steps,
                            record["loss"], record["task"], record["ratio"], record["kl"], record["distill"],
                            record["keep"])
    finally:
        for param in frozen:
            param.requires_grad_(True)
        dvit.predictor.eval()
        model.eval()
    return history


def train_classifier(model: nn.Module, batches: Iterable, *, steps: int, lr: float = 1e-3,
                     weight_decay: float = 0.05, log_every: int = 50) -> list[float]:
    """Plain cross-entropy training of a Hugging Face classifier (``model(pixel_values=...).logits``).

    Used to make a small teacher (e.g. a tiny ViT on Fashion-MNIST). Linear warm-up over the first
    10% of the steps, then cosine decay; leaves the model in eval mode. Returns the loss of every step.
    """
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 10)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(1, steps)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    stream = _cycle(batches)
    model.train()
    losses: list[float] = []
    try:
        for step in range(1, steps + 1):
            pixel_values, labels = _unpack(next(stream))
            logits = model(pixel_values=pixel_values.to(device)).logits
            loss = F.cross_entropy(logits, labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
            if log_every and (step % log_every == 0 or step == 1 or step == steps):
                logger.info("classifier step %d/%d loss %.4f", step, steps, losses[-1])
    finally:
        model.eval()
    return losses


@torch.no_grad()
def evaluate_accuracy(predict: Callable[[torch.Tensor], torch.Tensor], pixel_values: torch.Tensor,
                      labels: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``predict(pixel_values_batch) -> logits [B, classes]`` over a labelled set."""
    correct = 0
    for start in range(0, len(pixel_values), batch_size):
        logits = predict(pixel_values[start:start + batch_size])
        correct += int((logits.argmax(-1).cpu() == labels[start:start + batch_size]).sum())
    return correct / max(1, len(pixel_values))
