"""DynamicViT (Rao et al., NeurIPS 2021): a learned keep/drop predictor that prunes tokens in stages.

At each pruning layer a small prediction module scores every remaining patch token (CLS is never
pruned). Training (:mod:`vwt.bench.dynamicvit_train`) samples hard keep/drop decisions with
Gumbel-softmax and masks the dropped tokens out as attention *keys* with an additive 4D mask, so the
batch keeps its shape. Inference keeps the top ``ceil(rho**s * N)`` tokens at stage ``s`` (``rho`` is
the config's ``keep``) — the same count for every image — and gathers them, CLS first, kept patches in
their original order.

The model itself is never modified: the adapters of :mod:`vwt.encoders` drive its submodules.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import dataclass_from_dict
from ..encoders import adapter_for
from ..encoders.run import check_pixels
from ..io import check_regular_file, read_json
from .result import MethodResult

__all__ = ["DynamicViT", "DynamicViTConfig", "TokenPredictor", "PredictorStage", "default_prune_layers",
           "keep_counts", "select_tokens"]

PREDICTOR_FILE = "predictor.safetensors"
CONFIG_FILE = "config.json"
_PAPER_LAYERS, _PAPER_DEPTH = (3, 6, 9), 12


def default_prune_layers(depth: int) -> tuple[int, ...]:
    """The paper's ``(3, 6, 9)`` of 12 layers scaled to ``depth`` (16 -> (4, 8, 12)), deduplicated."""
    if depth < 2:
        raise ValueError(f"DynamicViT needs a model with at least 2 layers, this one has {depth}")
    return tuple(sorted({min(depth - 1, max(1, layer * depth // _PAPER_DEPTH)) for layer in _PAPER_LAYERS}))


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class DynamicViTConfig:
    """DynamicViT settings; the same object is what goes into ``config.json``."""

    # rho, a fraction in (0, 1]: stage s (1-based) keeps ceil(keep**s * N) of the N patch tokens.
    keep: float = 0.7
    # Layers before which tokens are pruned (0-based, increasing, in 1..depth-1); None: (3, 6, 9)
    # scaled to the model depth. DynamicViT(...) stores the resolved tuple.
    prune_layers: tuple[int, ...] | None = None
    # Weight of the ratio loss (MSE between each image's keep ratio and rho**s, mean over stages).
    ratio_weight: float = 2.0
    # Weight of the token distillation (MSE of kept tokens' final features against the teacher's).
    distill_weight: float = 0.5
    # Weight of the KL distillation of the logits to the frozen teacher's.
    kl_weight: float = 0.5
    # Gumbel-softmax temperature during training.
    gumbel_tau: float = 1.0
    # Train the backbone too (the teacher is then a frozen copy taken when training starts).
    train_backbone: bool = False
    # Deprecated spelling of ``keep`` (not stored).
    keep_ratio: InitVar[float | None] = None

    def __post_init__(self, keep_ratio: float | None) -> None:
        if keep_ratio is not None:
            warnings.warn("DynamicViTConfig(keep_ratio=) is deprecated: use keep= (the same fraction)",
                          DeprecationWarning, stacklevel=3)
            object.__setattr__(self, "keep", keep_ratio)
        if not (_real(self.keep) and 0.0 < self.keep <= 1.0):
            raise ValueError(f"keep (rho) must be a fraction in (0, 1], got {self.keep!r}")
        object.__setattr__(self, "keep", float(self.keep))
        for name in ("ratio_weight", "distill_weight", "kl_weight", "gumbel_tau"):
            value = getattr(self, name)
            if not (_real(value) and (value > 0 if name == "gumbel_tau" else value >= 0)):
                raise ValueError(f"{name} must be a {'positive' if name == 'gumbel_tau' else 'non-negative'} "
                                 f"number, got {value!r}")
        if not isinstance(self.train_backbone, bool):
            raise ValueError(f"train_backbone must be a bool, got {self.train_backbone!r}")
        if self.prune_layers is not None:
            layers = tuple(self.prune_layers)
            if not layers or not all(isinstance(v, int) and not isinstance(v, bool) for v in layers):
                raise ValueError(f"prune_layers must be a non-empty sequence of ints, got {self.prune_layers!r}")
            if any(b <= a for a, b in zip(layers, layers[1:])):
                raise ValueError(f"prune_layers must be strictly increasing, got {layers}")
            object.__setattr__(self, "prune_layers", layers)

    @property
    def stage_keep(self) -> tuple[float, ...]:
        """Target fraction kept after each stage: ``rho, rho**2, ...``. Needs resolved ``prune_layers``."""
        if self.prune_layers is None:
            raise ValueError("prune_layers are not resolved yet: use DynamicViTConfig.resolve(depth)")
        return tuple(self.keep ** s for s in range(1, len(self.prune_layers) + 1))

    def resolve(self, depth: int) -> DynamicViTConfig:
        """This config with ``prune_layers`` checked against (or defaulted for) a model of ``depth`` layers."""
        if self.prune_layers is None:
            return dataclasses.replace(self, prune_layers=default_prune_layers(depth))
        bad = [layer for layer in self.prune_layers if not 1 <= layer <= depth - 1]
        if bad:
            raise ValueError(f"prune_layers {bad} out of range: the model has {depth} layers, so tokens can be "
                             f"pruned before layers 1..{depth - 1}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON values (what ``config.json`` holds)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> DynamicViTConfig:
        """Strictly from a JSON dict; an old file's ``keep_ratio`` is read as ``keep`` (with a warning)."""
        if isinstance(data, dict) and "keep_ratio" in data and "keep" not in data:
            warnings.warn(f"{source}: keep_ratio is the old name of keep; save the predictor again to update it",
                          DeprecationWarning, stacklevel=2)
            data = {("keep" if k == "keep_ratio" else k): v for k, v in data.items()}
        return dataclass_from_dict(cls, data, source)


def keep_counts(num_patches: int, keep: float, num_stages: int) -> list[int]:
    """Patch tokens kept after each stage at inference: ``ceil(keep**s * N)`` (at least 1), s = 1..S."""
    # The tiny slack keeps float noise (e.g. 0.3 * 10 = 3.0000000000000004) from adding a token.
    return [max(1, math.ceil(keep ** s * num_patches - 1e-9)) for s in range(1, num_stages + 1)]


class PredictorStage(nn.Module):
    """The paper's prediction module: keep/drop log-probabilities of each token.

    ``z_local = MLP(x)``; ``z_global`` = policy-weighted mean of the second half of ``z_local``'s
    channels; ``[z_local[:, :, :D/2], z_global] -> MLP -> log_softmax`` over ``(keep, drop)``.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        if hidden_size < 4:
            raise ValueError(f"the prediction module needs hidden_size >= 4, got {hidden_size}")
        d = hidden_size
        self.in_conv = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU())
        self.out_conv = nn.Sequential(nn.Linear(d, d // 2), nn.GELU(), nn.Linear(d // 2, d // 4), nn.GELU(),
                                      nn.Linear(d // 4, 2), nn.LogSoftmax(dim=-1))

    def forward(self, x: torch.Tensor, policy: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, N, D]``, ``policy`` ``[B, N]`` (1 kept so far, 0 dropped) -> ``[B, N, 2]`` (keep, drop)."""
        x = self.in_conv(x)
        half = x.shape[-1] // 2
        weight = policy.to(x.dtype).unsqueeze(-1)
        global_x = (x[..., half:] * weight).sum(1, keepdim=True) / weight.sum(1, keepdim=True).clamp_min(1e-6)
        x = torch.cat([x[..., :half], global_x.expand(-1, x.shape[1], -1)], dim=-1)
        return self.out_conv(x)


class TokenPredictor(nn.Module):
    """One :class:`PredictorStage` per pruning stage (``stages.{s}.*`` in the safetensors file)."""

    def __init__(self, hidden_size: int, num_stages: int) -> None:
        super().__init__()
        self.hidden_size, self.num_stages = int(hidden_size), int(num_stages)
        self.stages = nn.ModuleList(PredictorStage(hidden_size) for _ in range(num_stages))


def select_tokens(hidden: torch.Tensor, scores: torch.Tensor, k: int, prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``k`` highest-scoring patch tokens of every image, in their original order.

    ``hidden`` ``[B, prefix + N, D]``, ``scores`` ``[B, N]`` -> ``[B, prefix + k, D]`` (prefix tokens
    first) and the kept positions ``[B, k]`` (ascending, indexing the N patch tokens).
    """
    index = scores.topk(k, dim=1, sorted=False).indices.sort(dim=1).values
    kept = hidden[:, prefix:].gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    return torch.cat([hidden[:, :prefix], kept], dim=1), index


class DynamicViT:
    """DynamicViT on an unmodified Hugging Face vision model (ViT, DINOv2, CLIP, ...).

    Example::

        dvit = DynamicViT(model, DynamicViTConfig(keep=0.7))
        train_dynamicvit(dvit, batches, steps=500)      # vwt.bench.dynamicvit_train
        result = dvit(pixel_values)                     # a MethodResult: the model's usual outputs, ...
        result.tokens_per_layer                         # ViT-B/16, rho 0.7: (197,) * 3 + (139,) * 3 + (98,) * 3 + (69,) * 3
        dvit.save_pretrained("dynamicvit-0.7")
    """

    def __init__(self, model: nn.Module, config: DynamicViTConfig | None = None,
                 predictor: TokenPredictor | None = None) -> None:
        self.adapter = adapter_for(model)
        self.model = self.adapter.model
        self.config = (config if config is not None else DynamicViTConfig()).resolve(len(self.adapter.layers))
        hidden_size = int(self.adapter.vision_config.hidden_size)
        stages = len(self.config.prune_layers)
        if predictor is None:
            param = next(self.model.parameters())
            predictor = TokenPredictor(hidden_size, stages).to(param.device).eval()
        elif (predictor.hidden_size, predictor.num_stages) != (hidden_size, stages):
            raise ValueError(f"predictor is for hidden size {predictor.hidden_size} with {predictor.num_stages} "
                             f"stages; the model has hidden size {hidden_size} and the config {stages} pruning stages")
        self.predictor = predictor

    def __repr__(self) -> str:
        c = self.config
        return f"DynamicViT({type(self.model).__name__}, keep={c.keep}, prune_layers={c.prune_layers})"

    @property
    def prefix(self) -> int:
        """Number of leading tokens that are never pruned (CLS, registers)."""
        return self.adapter.num_prefix_tokens

    def embed(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Embeddings (positions added, CLS first) after the model's pre-layer step: ``[B, S, D]``."""
        device = next(self.model.parameters()).device
        pixel_values = pixel_values.to(device)
        check_pixels(self.adapter, pixel_values, interpolate_pos_encoding)
        hidden = self.adapter.embed(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        return self.adapter.before_layers(hidden)

    def scores(self, stage: int, hidden: torch.Tensor, policy: torch.Tensor) -> torch.Tensor:
        """Stage ``stage``'s keep/drop log-probabilities ``[B, N, 2]`` of the patch tokens of ``hidden``."""
        dtype = next(self.predictor.parameters()).dtype
        return self.predictor.stages[stage](hidden[:, self.prefix:].to(dtype), policy)

    def __call__(self, pixel_values: torch.Tensor, *, interpolate_pos_encoding: bool = False,
                 **kwargs: Any) -> MethodResult:
        """Inference: prune to ``ceil(rho**s * N)`` tokens at stage s.

        Returns the model's usual outputs with the tokens entering each layer and ``kept_patches``
        ``[B, k]`` (positions among the N patches of the tokens kept to the end).

        Extra keyword arguments go to the family's head (e.g. ``input_ids`` for CLIP).
        """
        hidden = self.embed(pixel_values, interpolate_pos_encoding)
        b, n = hidden.shape[0], hidden.shape[1] - self.prefix
        layers = self.config.prune_layers
        counts = dict(zip(layers, keep_counts(n, self.config.keep, len(layers))))
        patch_ids = torch.arange(n, device=hidden.device).expand(b, -1)
        tokens, stage = [], 0
        for i, layer in enumerate(self.adapter.layers):
            if i in counts:
                policy = torch.ones(b, hidden.shape[1] - self.prefix, device=hidden.device)
                scores = self.scores(stage, hidden, policy)[..., 0]
                hidden, index = select_tokens(hidden, scores, counts[i], self.prefix)
                patch_ids = patch_ids.gather(1, index)
                stage += 1
            tokens.append(int(hidden.shape[1]))
            hidden = layer(hidden, None)
        mask = torch.ones(b, hidden.shape[1], dtype=torch.long, device=hidden.device)
        return MethodResult(outputs=self.adapter.outputs(hidden, mask, **kwargs), tokens_per_layer=tuple(tokens),
                            sequence_lengths=torch.full((b,), tokens[0], dtype=torch.long), kept_patches=patch_ids)

    def forward_full(self, pixel_values: torch.Tensor, *,
                     interpolate_pos_encoding: bool = False) -> tuple[Any, torch.Tensor]:
        """The unpruned model (the teacher's view): its usual outputs and last hidden states ``[B, S, D]``."""
        hidden = self.embed(pixel_values, interpolate_pos_encoding)
        for layer in self.adapter.layers:
            hidden = layer(hidden, None)
        full = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        return self.adapter.outputs(hidden, full), hidden

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``predictor.safetensors`` and ``config.json`` (the resolved config) into ``save_directory``."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.predictor.state_dict().items()}
        meta = {"format": "pt", "hidden_size": str(self.predictor.hidden_size),
                "model_class": type(self.model).__name__}
        save_file(state, str(out / PREDICTOR_FILE), metadata=meta)
        text = json.dumps(self.config.to_dict(), indent=2, sort_keys=True)
        (out / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, model: nn.Module) -> DynamicViT:
        """Load a saved predictor for ``model`` (safetensors only, strict keys and shapes)."""
        root = Path(directory)
        for name in (CONFIG_FILE, PREDICTOR_FILE):
            if not (root / name).exists():
                raise FileNotFoundError(f"{root / name} not found: not a DynamicViT save_pretrained directory")
        config = DynamicViTConfig.from_dict(read_json(root / CONFIG_FILE), str(root / CONFIG_FILE))
        dvit = cls(model, config)
        check_regular_file(root / PREDICTOR_FILE)
        state = load_file(str(root / PREDICTOR_FILE))
        expected = dvit.predictor.state_dict()
        if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
            raise ValueError(f"{root / PREDICTOR_FILE} does not fit a predictor for {type(model).__name__} "
                             f"(hidden size {dvit.predictor.hidden_size}, {dvit.predictor.num_stages} stages)")
        dvit.predictor.load_state_dict(state, strict=True)
        return dvit
