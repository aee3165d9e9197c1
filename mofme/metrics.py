"""Full-reference image quality metrics (PSNR, SSIM) with the conventions of the restoration field stated.

Conventions (papers disagree on these; ours follow BasicSR / MATLAB):

* Inputs are ``(N, C, H, W)`` floating tensors on the ``[0, data_range]`` scale (normally ``[0, 1]``);
  values are never rescaled or clipped, and integer tensors are rejected rather than guessed at.
* ``y_channel=True`` evaluates on the ITU-R BT.601 luma of BasicSR / MATLAB ``rgb2ycbcr``,
  ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255`` for RGB in ``[0, 1]``, kept on the ``[0, 1]``
  scale (so ``Y`` lies in ``[16/255, 235/255]``) and compared with the same ``data_range``. This is *not*
  the YIQ luma that pyiqa uses by default. One-channel inputs are taken to be luma already.
* ``crop_border`` pixels are removed from every side before the metric (after the Y conversion).
* Metrics are computed in float64, one value per image, shape ``(N,)``.
* Neither metric quantizes. The field reports numbers on 8-bit outputs: call :func:`quantize` on the
  prediction (and the target, if it is not already 8-bit) before the metric, as the evaluator does.

SSIM is Wang et al. (2004): an 11x11 Gaussian window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
computed per channel on the *valid* part of the filtered maps (no padding: the 5-pixel rim where the
window would leave the image is dropped) and averaged over pixels and channels. This equals MATLAB's
``ssim_index.m``, BasicSR's ``calculate_ssim`` and scikit-image's ``structural_similarity(...,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=...)``. torchmetrics'
``structural_similarity_index_measure`` is *not* used: it reflection-pads the images and averages the
SSIM map over the whole image including that rim (differences ~1e-3), and the border handling changed
between its releases.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["psnr", "quantize", "rgb_to_y", "ssim"]

_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): an 11-tap window, as in Wang et al. and scikit-image
_K1 = 0.01
_K2 = 0.03


def quantize(x: Tensor) -> Tensor:
    """Round a ``[0, 1]`` image to 8-bit levels: ``round(clamp(x, 0, 1) * 255) / 255`` (round half to even,
    as numpy / BasicSR ``tensor2img``). This is what saving the output as an 8-bit PNG does."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def rgb_to_y(x: Tensor) -> Tensor:
    """BT.601 luma of BasicSR / MATLAB ``rgb2ycbcr`` on the ``[0, 1]`` scale: ``(N, 3, H, W) -> (N, 1, H, W)``,
    ``Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255``."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects an (N, 3, H, W) tensor, got shape {tuple(x.shape)}")
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True) / 255.0 + 16.0 / 255.0


def _prepare(pred: Tensor, target: Tensor, *, y_channel: bool, crop_border: int) -> tuple[Tensor, Tensor]:
    """Validate, convert to float64, optionally take the luma, and crop the border."""
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        )
    if pred.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) tensors, got shape {tuple(pred.shape)}")
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise TypeError(
            f"expected floating tensors on the [0, data_range] scale, got {pred.dtype} and {target.dtype}; "
            "convert 8-bit images with x.float() / 255"
        )
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    pred, target = pred.to(torch.float64), target.to(torch.float64)
    if y_channel:
        if pred.shape[1] == 3:
            pred, target = rgb_to_y(pred), rgb_to_y(target)
        elif pred.shape[1] != 1:
            raise ValueError(f"y_channel=True needs 3 (RGB) or 1 (luma) channels, got {pred.shape[1]}")
    if crop_border:
        height, width = pred.shape[-2:]
        if 2 * crop_border >= min(height, width):
            raise ValueError(f"crop_border={crop_border} leaves nothing of a {height}x{width} image")
        crop = (..., slice(crop_border, -crop_border), slice(crop_border, -crop_border))
        pred, target = pred[crop], target[crop]
    return pred, target


def psnr(
    pred: Tensor, target: Tensor, *, y_channel: bool = False, crop_border: int = 0, data_range: float = 1.0
) -> Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(data_range^2 / MSE)``, in dB, shape ``(N,)`` float64.

    The MSE is taken over all channels and pixels of each image (after the optional Y conversion and
    border crop; see the module docstring). Identical images give ``+inf``. Does not quantize.
    """
    pred, target = _prepare(pred, target, y_channel=y_channel, crop_border=crop_border)
    mse = (pred - target).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)  # mse == 0 -> +inf


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian, 11 taps, sigma 1.5 (the separable factor of ``fspecial('gaussian', 11, 1.5)``)."""
    x = torch.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=dtype, device=device)
    g = torch.exp(-(x**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(x: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian filtering of every channel without padding: ``(B, C, H, W) -> (B, C, H-10, W-10)``.

    A weighted sum of the 11 shifted views along each axis, accumulated in place: on the CPU in
    float64 about 6x faster than a grouped convolution, the same sums up to rounding."""
    taps = len(window)
    height, width = x.shape[-2:]
    weights = window.tolist()
    rows = x[..., : height - taps + 1, :] * weights[0]
    for i in range(1, taps):
        rows.add_(x[..., i : height - taps + 1 + i, :], alpha=weights[i])
    out = rows[..., : width - taps + 1] * weights[0]
    for i in range(1, taps):
        out.add_(rows[..., i : width - taps + 1 + i], alpha=weights[i])
    return out


def ssim(
    pred: Tensor, target: Tensor, *, y_channel: bool = False, crop_border: int = 0, data_range: float = 1.0
) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), shape ``(N,)`` float64.

    Gaussian window 11x11, sigma 1.5, ``C1 = (0.01 data_range)^2``, ``C2 = (0.03 data_range)^2``,
    population (not sample) covariances, valid filtering (no padding), the SSIM map averaged over pixels
    and then over channels. Matches scikit-image ``structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)``. Images must be at least 11x11 after ``crop_border``.
    Identical images give 1. Does not quantize.
    """
    pred, target = _prepare(pred, target, y_channel=y_channel, crop_border=crop_border)
    size = 2 * _SSIM_RADIUS + 1
    if min(pred.shape[-2:]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {tuple(pred.shape[-2:])}")
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    window = _gaussian_window(pred.dtype, pred.device)
    batch = pred.shape[0]
    stats = _filter_valid(torch.cat([pred, target, pred * pred, target * target, pred * target]), window)
    mu_p, mu_t, e_pp, e_tt, e_pt = stats.split(batch)
    var_p, var_t, cov = e_pp - mu_p**2, e_tt - mu_t**2, e_pt - mu_p * mu_t
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    return ssim_map.mean(dim=(-2, -1)).mean(dim=1)
