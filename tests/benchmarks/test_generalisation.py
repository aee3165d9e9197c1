"""The generalisation report's clean-photo check: distance of the output from its own input, and the
largest difference between the tiled and the whole restore."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from mofme.benchmarks.generalisation import clean_check


class _Scale(nn.Module):
    """A restorer that multiplies the image by ``factor``; with ``global_mean`` it also adds the mean of
    whatever it sees, so tiles that see different content disagree (a seam)."""

    patch_size = 1

    def __init__(self, factor: float, global_mean: bool = False) -> None:
        super().__init__()
        self.factor, self.global_mean = factor, global_mean

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        shift = image.mean(dim=(1, 2, 3), keepdim=True) * 0.2 if self.global_mean else 0.0
        return (image * self.factor + shift).clamp(0, 1)


def _photo() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:96] / 96.0
    return np.stack([x, y, 0.5 * np.ones_like(x)], axis=-1).astype(np.float32)


def test_identity_leaves_the_photo_and_tiles_agree():
    (row,) = clean_check(_Scale(1.0), [("p", _photo())], tile=32, overlap=8)
    assert row["photo"] == "p" and math.isinf(row["psnr"]) and row["tiled_max_diff"] == 0.0


def test_a_uniform_change_is_measured_and_a_global_estimate_shows_a_seam():
    photo = _photo()
    (row,) = clean_check(_Scale(0.9), [("p", photo)], tile=32, overlap=8)
    quantized = np.round(photo * 255) / 255
    expected = 10 * np.log10(1 / np.mean((np.round(quantized * 0.9 * 255) / 255 - quantized) ** 2))
    assert abs(row["psnr"] - expected) < 0.05 and row["tiled_max_diff"] <= 1.0
    (seam,) = clean_check(_Scale(1.0, global_mean=True), [("p", photo)], tile=32, overlap=8)
    assert seam["tiled_max_diff"] > 5.0
