"""Pure tensor functions on image patches."""

from __future__ import annotations

import torch

__all__ = ["patchify", "patch_variance", "check_patch_grid"]


def check_patch_grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Return the patch grid ``(H // p, W // p)``; raise if the image does not tile exactly."""
    if patch_size <= 0:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} is not a multiple of the patch size {patch_size}; "
            "resize or crop the images to a multiple of the patch size"
        )
    return height // patch_size, width // patch_size


def patchify(pixel_values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping square patches, in raster order.

    Each patch is flattened channel-major (``C, p_row, p_col``), the order in which a
    ``Conv2d(C, D, kernel_size=p, stride=p)`` patch embedding sees it, so that
    ``patchify(x, p) @ conv.weight.reshape(D, -1).T + conv.bias`` equals the conv output.

    Args:
        pixel_values: ``[B, C, H, W]``, H and W multiples of ``patch_size``.
        patch_size: p.

    Returns:
        ``[B, N, C * p * p]`` with ``N = (H // p) * (W // p)``.
    """
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be [B, C, H, W], got shape {tuple(pixel_values.shape)}")
    b, c, h, w = pixel_values.shape
    gh, gw = check_patch_grid(h, w, patch_size)
    x = pixel_values.reshape(b, c, gh, patch_size, gw, patch_size)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * patch_size * patch_size)


def patch_variance(patches: torch.Tensor) -> torch.Tensor:
    """Pixel variance of each patch over all its values (channels and pixels).

    Args:
        patches: ``[B, N, D]`` from :func:`patchify`.

    Returns:
        ``[B, N]`` population variance; higher means a more heterogeneous patch.
    """
    return patches.var(dim=-1, unbiased=False)
