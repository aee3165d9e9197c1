"""Filling occluded pixels from their surroundings: push-pull interpolation over an image pyramid.

    filled = push_pull_fill(image, weight)    # image (N, C, H, W); weight (N, 1, H, W) in [0, 1]

``weight`` is the confidence of each pixel (1: keep it, 0: replace it). Push: ``w_{l+1} = avgpool2(w_l)``
and ``v_{l+1} = avgpool2(v_l)`` with ``v_0 = weight * image``, halving the size (ceil) until a side is 1.
Pull, coarse to fine: ``f_L = v_L / w_L`` (0 where ``w_L`` is 0) and
``f_l = v_l + (1 - w_l) * up(f_{l+1})`` (``up``: bilinear to level l's size), so a pixel keeps its
confident share and takes the rest from the weighted mean of ever larger neighbourhoods: holes of
any size fill from their rims, with no parameter. At full confidence the image is unchanged; the
result is differentiable in both ``image`` and ``weight``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["push_pull_fill"]

_EPS = 1e-6


def push_pull_fill(image: Tensor, weight: Tensor) -> Tensor:
    """``image`` (N, C, H, W) with its low-confidence pixels filled from the confident ones around
    them; ``weight`` (N, 1, H, W) in [0, 1] (module docstring). Returns (N, C, H, W)."""
    if weight.shape[0] != image.shape[0] or weight.shape[1] != 1 or weight.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"weight {tuple(weight.shape)} must be (N, 1, H, W) for image {tuple(image.shape)}")
    return _pull(weight * image, weight)


def _pull(weighted: Tensor, weight: Tensor) -> Tensor:
    """One pyramid level: ``weighted`` = v_l (N, C, h, w), ``weight`` = w_l (N, 1, h, w) -> f_l."""
    size = weighted.shape[-2:]
    if min(size) <= 1:
        return weighted / weight.clamp_min(_EPS)
    coarse = _pull(*(F.avg_pool2d(t, 2, ceil_mode=True) for t in (weighted, weight)))
    return weighted + (1.0 - weight) * F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
