"""What both online tokenizers share: images or pixel values in, a checked batch out.

A tokenizer returns a :class:`transformers.BatchFeature` with

- ``pixel_values`` ``[B, C, H, W]``: the preprocessed images;
- ``patch_to_token`` ``[B, N]`` int64: the token each patch lands in, -1 if dropped;
- ``attention_mask`` ``[B, 1 + T]`` int64: CLS plus each image's tokens are 1, padding 0;
- ``num_tokens`` ``[B]`` int64: tokens per image, CLS excluded;
- ``token_sizes`` ``[B, T]`` int64: patches per token (1 for a kept patch, 0 for padding), for
  size-aware attention;
- ``word_ids`` ``[B, T]`` int64 (visual words only): the word of each token, -1 for a patch that
  matched no word and for padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import BatchFeature

from ..config import PreprocessConfig
from ..preprocess import image_processor_from_config, preprocess_config, preprocess_images
from ..validate import check_pixel_values
from .matching import count_token_sizes, token_attention_mask

__all__ = ["PatchTokenizer"]


class PatchTokenizer:
    """Shared input handling: images or pixel values to checked ``[B, C, H, W]`` and patches."""

    patch_size: int
    num_channels: int
    preprocess: PreprocessConfig
    image_processor: Any
    # Where tokenization runs and its output lives; None: wherever the pixel values are.
    device: torch.device | None = None

    def _check_processor(self, image_processor: Any | None) -> Any:
        if image_processor is None:
            return image_processor_from_config(self.preprocess)
        given = preprocess_config(image_processor)
        if not given.same_normalization(self.preprocess):
            raise ValueError(
                f"the image processor normalizes with mean {list(given.image_mean)} / std {list(given.image_std)}, "
                f"but the patches were taken with mean {list(self.preprocess.image_mean)} / std "
                f"{list(self.preprocess.image_std)}: use a vocabulary built with this model's processor "
                "(vwt-build-vocab --image-processor ...)"
            )
        return image_processor

    def _pixel_values(self, images: Any, pixel_values: torch.Tensor | None) -> torch.Tensor:
        if (images is None) == (pixel_values is None):
            raise ValueError("pass exactly one of images or pixel_values")
        if isinstance(images, torch.Tensor) and (images.ndim == 4 or images.is_floating_point()):
            raise TypeError("images looks like preprocessed pixel values: pass them as pixel_values=...")
        if pixel_values is None:
            if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
                images = [images]
            if len(images) == 0:
                raise ValueError("empty batch: no images to tokenize")
            pixel_values = preprocess_images(list(images), self.image_processor)
        if not isinstance(pixel_values, torch.Tensor):
            try:
                pixel_values = torch.as_tensor(pixel_values)
            except (TypeError, ValueError, RuntimeError) as err:
                raise TypeError(f"pixel_values must be a tensor or an array of numbers ({err})") from None
        if pixel_values.ndim == 3:
            pixel_values = pixel_values.unsqueeze(0)
        if pixel_values.ndim != 4 or pixel_values.shape[0] == 0:
            raise ValueError(f"pixel_values must be a non-empty [B, C, H, W] batch, got {tuple(pixel_values.shape)}")
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"pixel_values have {pixel_values.shape[1]} channels, the tokenizer expects {self.num_channels}"
            )
        if self.device is not None:
            pixel_values = pixel_values.to(self.device)
        check_pixel_values(pixel_values)
        return pixel_values.float()  # tokenization is float32 whatever the model's precision

    def _batch(self, pixel_values: torch.Tensor, patch_to_token: torch.Tensor, num_tokens: torch.Tensor,
               return_tensors: str | None, **extra: torch.Tensor) -> BatchFeature:
        length = int(num_tokens.max())
        data = {
            "pixel_values": pixel_values,
            "patch_to_token": patch_to_token,
            "attention_mask": token_attention_mask(num_tokens, length),
            "num_tokens": num_tokens,
            "token_sizes": count_token_sizes(patch_to_token, length),
            **extra,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)
