"""The intra-image tokenizer: keep each image's most heterogeneous patches, drop the rest."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from transformers import BatchFeature

from ..config import check_token_budget, token_budget
from ..patches import patch_variance, patchify
from ..preprocess import default_image_processor, preprocess_config
from .base import PatchTokenizer
from .matching import keep_top_variance

__all__ = ["IntraImageTokenizer"]


class IntraImageTokenizer(PatchTokenizer):
    """Keep the most heterogeneous patches of each image (highest pixel variance), drop the rest.

    The budget is ``keep``, a fraction in ``(0, 1]`` of the patches (``round(keep * N)``, at least 1),
    or ``max_tokens``, a count (prefix tokens such as CLS are not counted); default ``keep=0.5``. The
    same rule as :class:`VisualWordTokenizer`'s budget, so ``keep=1`` keeps every patch.

    Args:
        keep: the fraction of the patches kept per image. An int above 1 (the old count) still works as
            ``max_tokens`` with a :class:`DeprecationWarning`.
        patch_size: the model's patch size.
        image_processor: the model's processor for PIL images (default: CLIP ViT-B/16's).
        num_channels: image channels.
        device: where tokenization runs and its batch lives; default: wherever the pixel values are.
        max_tokens: the number of patches kept per image, ``1 <= max_tokens <= N``.
    """

    def __init__(self, keep: float | None = None, patch_size: int = 16, image_processor: Any | None = None,
                 num_channels: int = 3, device: str | torch.device | None = None, *, max_tokens: int | None = None):
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, (int, float))):
            raise TypeError(f"keep must be a fraction (a float), got {type(keep).__name__}")
        if isinstance(keep, int) and keep > 1 and max_tokens is None:  # the old meaning: a count of patches
            warnings.warn(f"IntraImageTokenizer(keep={keep}) as a number of patches is deprecated: keep is a "
                          f"fraction in (0, 1]; pass max_tokens={keep}", DeprecationWarning, stacklevel=2)
            keep, max_tokens = None, keep
        elif isinstance(keep, int) and keep == 1:  # the fraction 1 now, one patch before
            warnings.warn("IntraImageTokenizer(keep=1) keeps every patch (keep is a fraction); it kept one patch "
                          "before: pass max_tokens=1 for that, or keep=1.0 to silence this", FutureWarning,
                          stacklevel=2)
        if keep is None and max_tokens is None:
            keep = 0.5
        check_token_budget(max_tokens, keep)
        self.keep = None if keep is None else float(keep)
        self.max_tokens = max_tokens
        self.device = None if device is None else torch.device(device)
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.image_processor = image_processor if image_processor is not None else default_image_processor()
        self.preprocess = preprocess_config(self.image_processor)

    def __repr__(self) -> str:
        budget = f"keep={self.keep}" if self.keep is not None else f"max_tokens={self.max_tokens}"
        return f"IntraImageTokenizer({budget}, patch_size={self.patch_size})"

    def num_kept(self, num_patches: int) -> int:
        """Patches kept out of ``num_patches``."""
        return token_budget(num_patches, self.max_tokens, self.keep)

    def __call__(
        self, images: Any = None, *, pixel_values: torch.Tensor | None = None, return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """Tokenize a batch of images (PIL, arrays) or of preprocessed ``pixel_values`` ``[B, C, H, W]``."""
        pixel_values = self._pixel_values(images, pixel_values)
        variance = patch_variance(patchify(pixel_values, self.patch_size))  # [B, N]
        keep = self.num_kept(variance.shape[1])
        patch_to_token = keep_top_variance(variance, keep)
        num_tokens = torch.full((len(variance),), keep, dtype=torch.long, device=variance.device)
        return self._batch(pixel_values, patch_to_token, num_tokens, return_tensors)
