"""Batching images of different token counts without paying for padding.

With plain padding a batch runs at the length of its longest image. The alternatives:

- **bucketing**: sort the images by length and run groups of similar length separately;
- **packing**: put several images into one sequence, each with its own CLS, and keep them apart with
  a block-diagonal attention mask (a token attends only to tokens of its own image);
- **ragged**: every real token of the batch in one sequence with no padding at all, attention kept
  within each image (:mod:`vwt.encoders.ragged`); the layers are driven from their parts, so it needs
  an adapter with ``layer_parts``.

All give every image exactly the result it gets alone (up to float rounding). The plans are
computed from the ``[B]`` lengths only (a few integers per batch, no tensor work). ``"auto"`` picks
one per batch with :func:`choose_batching`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["BATCHING", "PackingPlan", "plan_packing", "pack", "unpack", "plan_buckets", "plan_buckets_by_cost",
           "plan_auto_buckets", "processed_length", "choose_batching", "AUTO_IMAGES_PER_BUCKET",
           "BUCKET_OVERHEAD_TOKENS", "BUCKET_MAX_IMAGES"]

BATCHING = ("auto", "pad", "bucket", "pack", "ragged")
"""The batching modes; ``"auto"`` resolves to one of the others per batch (:func:`choose_batching`)."""


AUTO_IMAGES_PER_BUCKET = 4
"""Images per group when ``"auto"`` buckets off CPU (:func:`plan_auto_buckets`; on CPU it plans by cost). Measured on
CPU before the cost plan: at batch 32, 8 groups ran faster than 2, 4 or 16; never measured on a GPU."""


def choose_batching(lengths: torch.Tensor, device: torch.device | str = "cpu", ragged: bool = True
                    ) -> tuple[str, int]:
    """The mode ``"auto"`` runs for a batch, and its number of buckets: a fixed rule on the lengths, the
    batch size and the device.

    - one image, or every image the same length, or while ``torch.compile`` traces: ``"pad"`` (nothing
      is padded: one dense batch, no mask at all without sizes; the other modes plan on the host), except
      on CPU for more than :data:`BUCKET_MAX_IMAGES` images of one length: ``"bucket"``, in groups of at
      most that many, whose activations stay in cache (measured on DINOv2 ViT-S/14, batch 32, one thread:
      base 1.10x, ToMe r=13 6-10% faster; the dense methods' runners group the same way,
      :func:`vwt.methods.registry.dense_groups`);
    - variable lengths on CUDA: ``"ragged"`` (FlexAttention's fused kernel on the real tokens only,
      blocks across images skipped), or ``"bucket"`` where the adapter cannot drive its layers from
      their parts (``ragged=False``, BLIP). Not measured here (no GPU was at hand): by construction;
    - variable lengths on CPU: ``"bucket"``, its groups planned by cost (:func:`plan_auto_buckets`).
      Measured on DINOv2 ViT-S/14, batch 32, one thread, thread CPU time (``scripts/bench_latency.py
      --batch 32``): bucketing in groups of 4 beat pad, pack and ragged (whose attention is padded on CPU,
      where compiled FlexAttention took about 3x SDPA's time), and groups planned by cost beat groups of 4.

    Args:
        lengths: ``[B]`` real tokens per image (CLS included).
        device: where the layers run.
        ragged: whether the model supports ``"ragged"``.

    Returns:
        ``(mode, num_buckets)``; ``num_buckets`` (groups of :data:`AUTO_IMAGES_PER_BUCKET` images) matters
        for ``"bucket"`` only, where :func:`plan_auto_buckets` does not plan by cost.

    One host sync (the lengths are compared), except while tracing.
    """
    buckets = max(1, -(-len(lengths) // AUTO_IMAGES_PER_BUCKET))
    if torch.compiler.is_compiling() or len(lengths) == 1:
        return "pad", buckets
    on_cpu = torch.device(device).type == "cpu"
    if bool((lengths == lengths[0]).all()):
        return ("bucket", buckets) if on_cpu and len(lengths) > BUCKET_MAX_IMAGES else ("pad", buckets)
    if torch.device(device).type == "cuda" and ragged:
        return "ragged", buckets
    return "bucket", buckets


@dataclass(frozen=True)
class PackingPlan:
    """Where each image goes: ``row[i]`` and ``offset[i]`` in a ``[num_rows, row_length]`` packed batch."""

    row: torch.Tensor  # [B] int64
    offset: torch.Tensor  # [B] int64
    num_rows: int
    row_length: int


def plan_packing(lengths: torch.Tensor, capacity: int | None = None) -> PackingPlan:
    """First-fit-decreasing bin packing of sequences into rows of ``capacity`` tokens.

    Args:
        lengths: ``[B]`` real tokens per image (CLS included).
        capacity: tokens per packed row (default, and at least: the longest image).

    Returns:
        A :class:`PackingPlan`; ``row_length`` is the longest packed row.
    """
    sizes = [int(v) for v in lengths.tolist()]
    capacity = max(sizes + [capacity or 0])
    free: list[int] = []  # remaining room of each row
    row, offset = [0] * len(sizes), [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda j: -sizes[j]):
        r = next((r for r, room in enumerate(free) if room >= sizes[i]), len(free))
        if r == len(free):
            free.append(capacity)
        row[i], offset[i] = r, capacity - free[r]
        free[r] -= sizes[i]
    used = max(capacity - room for room in free)
    as_tensor = lambda v: torch.tensor(v, dtype=torch.long, device=lengths.device)  # noqa: E731
    return PackingPlan(as_tensor(row), as_tensor(offset), len(free), used)


def _positions(lengths: torch.Tensor, plan: PackingPlan, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``valid`` ``[B, width]`` and the flat packed position of every (image, token) ``[B, width]``."""
    token = torch.arange(width, device=lengths.device)
    valid = token.unsqueeze(0) < lengths.unsqueeze(1)
    flat = (plan.row * plan.row_length + plan.offset).unsqueeze(1) + token.unsqueeze(0)
    return valid, flat


def pack(hidden: torch.Tensor, lengths: torch.Tensor, plan: PackingPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack padded sequences into rows.

    Args:
        hidden: ``[B, S, D]`` padded sequences, real tokens first (CLS at 0).
        lengths: ``[B]`` real tokens per image.
        plan: from :func:`plan_packing`.

    Returns:
        ``(packed, segment)``: ``[R, L, D]`` and ``[R, L]`` int64 image index of each position
        (-1 for padding, which then attends only to padding).
    """
    b, s, d = hidden.shape
    valid, flat = _positions(lengths, plan, s)
    packed = hidden.new_zeros(plan.num_rows * plan.row_length, d)
    packed[flat[valid]] = hidden[valid]
    segment = torch.full((plan.num_rows * plan.row_length,), -1, dtype=torch.long, device=hidden.device)
    segment[flat[valid]] = torch.arange(b, device=hidden.device).unsqueeze(1).expand(b, s)[valid]
    return packed.view(plan.num_rows, plan.row_length, d), segment.view(plan.num_rows, plan.row_length)


def unpack(packed: torch.Tensor, lengths: torch.Tensor, plan: PackingPlan, width: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``[R, L, D]`` back to padded ``[B, width, D]`` (padding rows zero)."""
    d = packed.shape[-1]
    valid, flat = _positions(lengths, plan, width)
    out = packed.new_zeros(len(lengths), width, d)
    out[valid] = packed.reshape(-1, d)[flat[valid]]
    return out


def plan_buckets(lengths: torch.Tensor, num_buckets: int = 4) -> list[torch.Tensor]:
    """Split a batch into up to ``num_buckets`` groups of similar length (sorted, equal-sized chunks).

    Returns:
        Index tensors into the batch, longest images first.
    """
    order = torch.argsort(lengths, descending=True, stable=True)
    return [chunk for chunk in order.chunk(max(1, min(num_buckets, len(order)))) if len(chunk)]


BUCKET_OVERHEAD_TOKENS = 64
"""What one more group costs in :func:`plan_buckets_by_cost`, in padded tokens. Measured on DINOv2 ViT-S/14, one
thread, ToMe's layers (``vwt+tome``): a group of ``b`` images of ``S`` tokens took about ``(b·S + 60)`` times one
token's time (the fixed part: small matrix products, per-call work), e.g. 75 against 57 ms per image of 163 tokens
alone and in groups of 8."""

BUCKET_MAX_IMAGES = 12
"""The most images :func:`plan_buckets_by_cost` puts in one group: beyond about 12 images of 250 tokens the
activations leave the cache and a token costs more again (measured as above: 93 ms per image in groups of 12 and 16,
106 in one group of 32)."""


def plan_buckets_by_cost(lengths: torch.Tensor, overhead: float = BUCKET_OVERHEAD_TOKENS,
                         max_images: int = BUCKET_MAX_IMAGES) -> list[torch.Tensor]:
    """Split a batch into groups of similar length that cost the least to run: padded tokens plus ``overhead`` a group.

    Groups are runs of the images sorted by length (longest first); the split that minimises
    ``sum over groups of (images · longest length + overhead)`` with at most ``max_images`` images a group is
    found exactly by dynamic programming over the sorted lengths (``O(B · max_images)`` integer steps on the
    host). Images of equal length end up together, a lone outlier alone where padding it would cost more.
    Among splits of equal cost the one with the most even group sizes wins (least sum of squared sizes), so
    13 images of one length run as 7 and 6, not 12 and 1.

    Args:
        lengths: ``[B]`` real tokens per image (CLS included).
        overhead: the cost of one more group, in padded tokens (>= 0).
        max_images: images per group, >= 1.

    Returns:
        Index tensors into the batch, longest images first (as :func:`plan_buckets`).

    One host sync (the lengths).
    """
    if max_images < 1 or overhead < 0:
        raise ValueError(f"need max_images >= 1 and overhead >= 0, got {max_images} and {overhead}")
    order = torch.argsort(lengths, descending=True, stable=True)
    longest = lengths[order].tolist()
    # best[j]: (cost, sum of squared group sizes) of the cheapest split of the first j sorted images
    best = [(0.0, 0)] + [(math.inf, 0)] * len(longest)
    start = [0] * (len(longest) + 1)  # start[j]: where the last group of that split begins
    for j in range(1, len(longest) + 1):
        for i in range(max(0, j - max_images), j):
            cost = (best[i][0] + (j - i) * longest[i] + overhead, best[i][1] + (j - i) ** 2)
            if cost < best[j]:
                best[j], start[j] = cost, i
    groups, j = [], len(longest)
    while j > 0:
        groups.append(order[start[j]:j])
        j = start[j]
    return groups[::-1]


def plan_auto_buckets(lengths: torch.Tensor, device: torch.device | str, num_buckets: int) -> list[torch.Tensor]:
    """The groups ``"auto"`` runs where it buckets (the same in every method that buckets).

    On CPU, :func:`plan_buckets_by_cost` (its costs were measured there). Elsewhere ``num_buckets`` groups of
    equal size (:func:`plan_buckets`): the cost of a group on a GPU was not measured here.

    Args:
        lengths: ``[B]`` real tokens per image (CLS included).
        device: where the layers run.
        num_buckets: the groups :func:`choose_batching` returned.
    """
    if torch.device(device).type == "cpu":
        return plan_buckets_by_cost(lengths)
    return plan_buckets(lengths, num_buckets)


def processed_length(lengths: torch.Tensor, batching: str, *, capacity: int, num_buckets: int = 4,
                     buckets: Sequence[torch.Tensor] | None = None) -> float:
    """Mean sequence length per image that the layers process, padding included: the compute.

    The same plans :class:`vwt.encoders.VisualWordModel` runs: ``"pad"`` pads every image to the
    longest, ``"bucket"`` each group to its own longest, ``"pack"`` fills rows of ``capacity`` tokens,
    ``"ragged"`` processes the real tokens only (``"auto"``: what :func:`choose_batching` picks on CPU).

    Args:
        lengths: ``[B]`` real tokens per image (CLS included).
        batching: one of :data:`BATCHING`.
        capacity: tokens per packed row (``"pack"``).
        num_buckets: groups per batch (``"bucket"``).
        buckets: the groups ``"bucket"`` runs, where the caller planned them (default: :func:`plan_buckets`,
            or for ``"auto"`` :func:`plan_auto_buckets` on CPU).
    """
    if batching not in BATCHING:
        raise ValueError(f"batching must be one of {', '.join(BATCHING)}, got {batching!r}")
    auto = batching == "auto"
    if auto:
        batching, num_buckets = choose_batching(lengths)
    if batching == "ragged":
        return float(lengths.sum()) / len(lengths)
    if batching == "pad" or len(lengths) == 1:
        return float(lengths.max())
    if batching == "pack":
        plan = plan_packing(lengths, capacity)
        return plan.num_rows * plan.row_length / len(lengths)
    if buckets is None:
        buckets = plan_auto_buckets(lengths, "cpu", num_buckets) if auto else plan_buckets(lengths, num_buckets)
    return sum(len(i) * int(lengths[i].max()) for i in buckets) / len(lengths)
