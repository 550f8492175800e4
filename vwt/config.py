"""Frozen, typed configs. The same objects are what goes into ``config.json``."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PreprocessConfig", "VocabularyConfig", "TokenizerConfig", "ConfigError", "dataclass_from_dict",
           "processor_output_size", "check_token_budget", "token_budget"]


class ConfigError(ValueError):
    """A ``config.json`` that is missing fields, has unknown fields or has values of the wrong type."""


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type hint (lists stand for tuples, dicts for nested configs)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if origin is dict or dataclasses.is_dataclass(hint):
        return isinstance(value, dict) or isinstance(value, hint if dataclasses.is_dataclass(hint) else dict)
    return isinstance(value, hint)


def dataclass_from_dict(cls: type, data: Any, source: str) -> Any:
    """Strictly build dataclass ``cls`` from a JSON dict: every required field present, none unknown,
    each value of its field's type; errors name ``source`` (the file)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - data.keys())
    unknown = sorted(data.keys() - names)
    if missing or unknown:
        raise ConfigError(f"{source}: {cls.__name__} has missing fields {missing} and unknown fields {unknown}")
    hints = typing.get_type_hints(cls)
    wrong = [f"{name}={value!r}" for name, value in data.items() if not _matches(value, hints[name])]
    if wrong:
        raise ConfigError(f"{source}: {cls.__name__} fields of the wrong type: {', '.join(wrong)}")
    try:
        return cls(**data)
    except (TypeError, ValueError) as err:  # a value check in __post_init__
        raise ConfigError(f"{source}: {err}") from err


def processor_output_size(proc: dict[str, Any]) -> tuple[int, int]:
    """Height and width of the images an image processor (its JSON dict) produces: the crop, or a fixed size."""
    size = proc.get("crop_size") if proc.get("do_center_crop") else proc.get("size")
    if not isinstance(size, dict):
        raise ValueError(f"cannot tell the output image size of image processor {proc.get('image_processor_type')}")
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if "shortest_edge" in size and not size.get("longest_edge"):
        raise ValueError(
            "the image processor keeps the aspect ratio without cropping: images would not share one size; "
            "use a processor with a center crop or a fixed height and width"
        )
    raise ValueError(f"unsupported image processor size {size}")


def _close(a: Any, b: tuple[float, ...]) -> bool:
    """Whether two normalization means or stds (``a`` may be a JSON list) are equal, to float32 round-off."""
    if not isinstance(a, (list, tuple)) or len(a) != len(b):
        return False
    return all(isinstance(u, (int, float)) and math.isclose(u, v, rel_tol=1e-5, abs_tol=1e-9) for u, v in zip(a, b))


def check_token_budget(max_tokens: Any, keep: Any) -> None:
    """Raise a clear error unless ``max_tokens`` (a count) and ``keep`` (a fraction) make a valid budget.

    At most one of them; ``max_tokens`` a whole number ``>= 1``; ``keep`` a fraction in ``(0, 1]``.
    """
    if max_tokens is not None and keep is not None:
        raise ValueError("pass either max_tokens (a number of tokens) or keep (a fraction of the patches), not both")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a whole number of tokens, at least 1, got {max_tokens!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0):
        raise ValueError(f"keep must be a fraction of the patches in (0, 1], got {keep!r} "
                         "(max_tokens takes a number of tokens)")


def token_budget(num_patches: int, max_tokens: int | None = None, keep: float | None = None) -> int | None:
    """Tokens per image that a budget leaves of ``num_patches`` patches (prefix tokens such as CLS not
    counted): ``max_tokens`` itself, or ``round(keep * N)`` clipped to ``[1, N]``; None without a budget."""
    if keep is not None:
        return max(1, min(num_patches, round(keep * num_patches)))
    if max_tokens is not None and max_tokens > num_patches:
        raise ValueError(f"max_tokens={max_tokens} is more than the {num_patches} patches of an image")
    return max_tokens


@dataclass(frozen=True)
class PreprocessConfig:
    """How images were turned into ``pixel_values``: a Hugging Face image processor, recorded exactly."""

    # Hugging Face processor type as saved by the processor, e.g. "CLIPImageProcessor".
    processor_type: str
    # The processor's full JSON dict (resize, resample, crop, rescale, normalization, ...).
    processor: dict[str, Any]
    # Height and width of the resulting pixel_values.
    image_size: tuple[int, int]
    # Per-channel normalization mean and std applied after rescaling to [0, 1].
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ConfigError(f"image_size must be two positive ints, got {self.image_size}")
        if len(self.image_mean) != len(self.image_std) or not self.image_mean:
            raise ConfigError("image_mean and image_std must have one value per channel")
        if not all(math.isfinite(v) for v in (*self.image_mean, *self.image_std)):
            raise ConfigError(f"image_mean and image_std must be finite, got {self.image_mean} / {self.image_std}")
        if min(self.image_std) <= 0:
            raise ConfigError(f"image_std must be positive (it divides the pixels), got {self.image_std}")
        self._check_processor()

    def _check_processor(self) -> None:
        """The recorded processor must produce what the other fields say: its output size and normalization."""
        proc = self.processor
        try:
            size = processor_output_size(proc)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"processor: {err}") from err
        if size != self.image_size:
            raise ConfigError(f"the processor makes {size[0]}x{size[1]} images but image_size is {self.image_size}")
        if proc.get("do_normalize", True) and proc.get("image_mean") is not None and proc.get("image_std") is not None:
            if not (_close(proc.get("image_mean"), self.image_mean) and _close(proc.get("image_std"), self.image_std)):
                raise ConfigError(
                    f"the processor normalizes with mean {proc.get('image_mean')} / std {proc.get('image_std')}, "
                    f"but image_mean / image_std are {list(self.image_mean)} / {list(self.image_std)}"
                )

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> PreprocessConfig:
        return dataclass_from_dict(cls, data, source)

    def same_normalization(self, other: PreprocessConfig) -> bool:
        """Whether ``other`` normalizes pixels with the same mean and std (to float32 rounding)."""
        return _close(self.image_mean, other.image_mean) and _close(self.image_std, other.image_std)


@dataclass(frozen=True)
class VocabularyConfig:
    """Everything needed to reuse or rebuild a bag of visual words."""

    # Number of visual words (k-means centroids).
    k: int
    # Side of the square patches, in pixels of pixel_values.
    patch_size: int
    # Image channels; a word has num_channels * patch_size**2 values, channel-major.
    num_channels: int
    # The preprocessing the patches were taken in (the model's image processor).
    preprocess: PreprocessConfig
    # Where the images came from: a datasets id, a folder, "sample" or "iterable".
    dataset: str = "iterable"
    # Dataset split, when the data is a datasets id.
    split: str | None = None
    # Images whose patches went into k-means.
    num_images: int = 0
    # Patches that went into k-means (after per-image sampling).
    num_patches: int = 0
    # Images that could not be read or preprocessed and were skipped.
    num_skipped: int = 0
    # Patches sampled per image (None: all of them).
    patches_per_image: int | None = None
    # MiniBatchKMeans.partial_fit batch size, in patches.
    batch_size: int = 4096
    # Seed of the patch sampling and of k-means: the same seed rebuilds the same words.
    seed: int = 0
    # vwt version that built the vocabulary.
    vwt_version: str = ""
    # The command that rebuilds this vocabulary.
    command: str = ""
    # Free-form notes for the model card.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.preprocess, dict):
            object.__setattr__(self, "preprocess", PreprocessConfig.from_dict(self.preprocess, "preprocess"))
        for name in ("num_images", "num_patches", "num_skipped"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in ("k", "patch_size", "num_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if len(self.preprocess.image_mean) != self.num_channels:
            raise ConfigError(
                f"preprocess normalizes {len(self.preprocess.image_mean)} channels, num_channels is {self.num_channels}"
            )
        if any(side % self.patch_size for side in self.preprocess.image_size):
            raise ConfigError(f"image_size {self.preprocess.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def dim(self) -> int:
        """Length of one flattened patch and one word: ``num_channels * patch_size ** 2``."""
        return self.num_channels * self.patch_size**2

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Any, source: str = "config") -> VocabularyConfig:
        return dataclass_from_dict(cls, data, source)


@dataclass(frozen=True)
class TokenizerConfig:
    """The visual-word tokenizer's own settings (the rest is the vocabulary): a threshold, or a token budget.

    With a budget (``max_tokens`` or ``keep``) the threshold is not used (None): see
    :class:`vwt.tokenize.tokenizer.VisualWordTokenizer`.
    """

    # Cosine distance above which (strictly) a patch matches no word and stays a token of its own.
    threshold: float | None = 0.1
    # Token budget: exactly this many tokens per image. A count of the image's tokens: prefix tokens (CLS,
    # registers) are not counted (they are never merged), as in the tokenizer's ``num_tokens``.
    max_tokens: int | None = None
    # Token budget as a fraction of the patches: round(keep * N) tokens per image, at least 1.
    keep: float | None = None
    # Merge only 4-connected patches of a word: each word's patches split into contiguous pieces.
    connected: bool = False
    # Merge only patches inside one ``window x window`` block of the patch grid (None: anywhere).
    window: int | None = None
    # Merge only patches whose norms lie in one band [b**i, b**(i + 1)) of this ratio b > 1 (None: any norms).
    norm_band: float | None = None
    # A floor: no image keeps fewer than round(min_keep * N) tokens (at least 1); an image the threshold would
    # leave below it matches only its closest patches (None: no floor).
    min_keep: float | None = None

    def __post_init__(self) -> None:
        budgets = [name for name in ("max_tokens", "keep") if getattr(self, name) is not None]
        if self.connected and budgets:
            raise ValueError("connected=True works with a threshold, not a token budget (joining a patch can "
                             "bridge two pieces at once, so an exact count is not guaranteed)")
        if self.window is not None:
            if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
                raise ValueError(f"window must be a whole number of patches >= 1, got {self.window!r}")
        if self.norm_band is not None and not (isinstance(self.norm_band, (int, float)) and self.norm_band > 1
                                               and math.isfinite(self.norm_band)):
            raise ValueError(f"norm_band must be a finite ratio > 1, got {self.norm_band!r}")
        if self.min_keep is not None and (isinstance(self.min_keep, bool) or not isinstance(self.min_keep, (int, float))
                                          or not 0 < self.min_keep <= 1):
            raise ValueError(f"min_keep must be a fraction in (0, 1] of the patches, got {self.min_keep!r}")
        if self.min_keep is not None and budgets:
            raise ValueError("min_keep= works with a threshold, not a token budget (a budget already fixes every "
                             "image's tokens)")
        split = [name for name in ("window", "norm_band") if getattr(self, name) is not None]
        if split and budgets:
            raise ValueError(f"{split[0]}= works with a threshold, not a token budget (a budget counts a word's "
                             "patches as one token, which it may split)")
        check_token_budget(self.max_tokens, self.keep)
        if budgets and self.threshold is not None:
            raise ValueError(f"a token budget replaces the threshold: pass {budgets[0]} or threshold, not both")
        if not budgets and self.threshold is None:
            raise ValueError("pass a threshold or a token budget (max_tokens or keep)")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, got {self.threshold}")

    def budget(self, num_patches: int) -> int | None:
        """Tokens per image for images of ``num_patches`` patches, or None without a budget."""
        return token_budget(num_patches, self.max_tokens, self.keep)
