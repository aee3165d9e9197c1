"""Array transforms shared by the datasets: the 8 flip/rotation modes, aligned random crops, padding.

Images are numpy (H, W, C) arrays; ``to_tensor`` makes the (C, H, W) float32 tensors the models take.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["AUGMENT_MODES", "augment", "jitter_colors", "pad_to", "random_crop_box", "to_tensor"]

AUGMENT_MODES = 8  # the dihedral group of the square: 4 rotations x optional flip


def augment(image: np.ndarray, mode: int) -> np.ndarray:
    """Apply one of the 8 flip/rotation modes to an (H, W, ...) array: rotate by 90 * (mode % 4)
    degrees counter-clockwise, then flip left-right if mode >= 4. Mode 0 is the identity."""
    if not 0 <= mode < AUGMENT_MODES:
        raise ValueError(f"augment mode must be in 0..7, got {mode}")
    out = np.rot90(image, mode % 4, axes=(0, 1))
    if mode >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def jitter_colors(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random photometric variant of a clean (H, W, 3) float image in [0, 1]: the colour channels in a
    random order, a white-balance gain U(0.8, 1.2) per channel (which also tints grey photos),
    saturation scaled by U(0.5, 1.5) around the channel mean, and a gamma exp(U(-0.5, 0.5)) (darker or
    brighter scenes). Applied to the clean content before weather is rendered, so rain, snow and haze
    keep their own colours."""
    out = image[..., rng.permutation(3)] * rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    gray = out.mean(axis=-1, keepdims=True)
    out = np.clip(gray + rng.uniform(0.5, 1.5) * (out - gray), 0.0, 1.0)
    out = out ** np.exp(rng.uniform(-0.5, 0.5))
    return np.ascontiguousarray(out, dtype=np.float32)


def random_crop_box(
    rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int]
) -> tuple[int, int]:
    """Top-left (y, x) of a uniformly random ``size`` crop inside ``shape`` (which must be large enough)."""
    return int(rng.integers(0, shape[0] - size[0] + 1)), int(rng.integers(0, shape[1] - size[1] + 1))


def pad_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Mirror-pad an (H, W, ...) array (evenly on both sides) to at least ``size``; no-op if large enough."""
    pad_h, pad_w = max(0, size[0] - image.shape[0]), max(0, size[1] - image.shape[1])
    if pad_h == 0 and pad_w == 0:
        return image
    widths = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)) + ((0, 0),) * (
        image.ndim - 2
    )
    return np.pad(image, widths, mode="symmetric")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) float array -> (C, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
