"""Helpers shared by the renderer families (the classic renderer's helpers live in
:mod:`mofme.data.weather`; import those from there)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..weather import _resize_bilinear

_FBM_GRID = 128  # fBm fields are built on a grid of at most this many pixels along the long side
_SPLINE_STD = 0.88  # std of unit white noise interpolated by a cubic spline at off-grid points


def _fbm(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cells: float,
    *,
    octaves: int = 5,
    persistence: float = 0.5,
    stretch: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """Fractal Brownian motion noise, (H, W) float32 with zero mean and about unit std.

    Octave k is cubic-spline-interpolated white noise with ``cells * 2**k`` blobs across the long side
    and amplitude ``persistence**k``; ``stretch`` > 1 elongates the blobs along ``angle`` (radians,
    0 = horizontal). Built on a <= 128-pixel grid and resized bilinearly (cheap, resolution-independent);
    it is normalised by its expected std, not its sample std, so a crop looks like part of a larger field.
    """
    h, w = shape
    long_side = max(h, w)
    gs = min(_FBM_GRID, long_side)
    hs, ws = max(2, round(gs * h / long_side)), max(2, round(gs * w / long_side))
    yy, xx = np.mgrid[0:hs, 0:ws].astype(np.float64)
    yy -= (hs - 1) / 2
    xx -= (ws - 1) / 2
    along = (math.cos(angle) * xx + math.sin(angle) * yy) / stretch
    across = -math.sin(angle) * xx + math.cos(angle) * yy
    total = np.zeros((hs, ws))
    power = 0.0
    for k in range(octaves):
        cell = gs / (cells * 2**k)  # grid pixels per blob
        if cell < 1.5:
            break
        u, v = across / cell, along / cell
        u, v = u - u.min() + 1.5, v - v.min() + 1.5
        grid = rng.standard_normal((int(u.max()) + 4, int(v.max()) + 4))
        total += persistence**k * ndimage.map_coordinates(grid, [u, v], order=3, mode="nearest")
        power += persistence ** (2 * k)
    total /= _SPLINE_STD * math.sqrt(max(power, 1e-12))
    return _resize_bilinear(total, (h, w))


class _StreakFrame:
    """A grid rotated so that its rows run along ``angle`` (radians, 0 = down the image, as in
    :func:`~mofme.data.weather._segments`): canvas axis 0 is the along-streak coordinate, axis 1 the
    across one, both in steps of ``step`` image pixels. The canvas covers the (H, W) image ``shape``
    plus ``margin`` pixels on every side, so a 1-D filter along axis 0 is a directional filter."""

    def __init__(self, shape: tuple[int, int], angle: float, step: float = 1.0, margin: float = 0.0):
        self.shape, self.angle, self.step = (int(shape[0]), int(shape[1])), float(angle), float(step)
        h, w = self.shape
        c, s = abs(math.cos(angle)), abs(math.sin(angle))
        self.half = (h / 2 * c + w / 2 * s + margin, h / 2 * s + w / 2 * c + margin)
        self.canvas_shape = tuple(math.ceil(2 * e / self.step) + 2 for e in self.half)

    def to_image(self, canvas: np.ndarray) -> np.ndarray:
        """Bilinearly sample a canvas (``canvas_shape``) at the image pixels: (H, W) float32."""
        h, w = self.shape
        c, s = math.cos(self.angle), math.sin(self.angle)
        yy = (np.arange(h, dtype=np.float32) - (h - 1) / 2)[:, None]
        xx = (np.arange(w, dtype=np.float32) - (w - 1) / 2)[None, :]
        u = (yy * c + xx * s + self.half[0]) / self.step
        v = (xx * c - yy * s + self.half[1]) / self.step
        return ndimage.map_coordinates(canvas.astype(np.float32), [u, v], order=1, mode="constant")

    def from_image(self, image: np.ndarray) -> np.ndarray:
        """Bilinearly sample an (H, W) map on the canvas grid (zero outside the image)."""
        h, w = self.shape
        c, s = math.cos(self.angle), math.sin(self.angle)
        rows, cols = self.canvas_shape
        u = (np.arange(rows, dtype=np.float32) * self.step - self.half[0])[:, None]
        v = (np.arange(cols, dtype=np.float32) * self.step - self.half[1])[None, :]
        coords = [u * c - v * s + (h - 1) / 2, u * s + v * c + (w - 1) / 2]
        return ndimage.map_coordinates(image.astype(np.float32), coords, order=1, mode="constant")


def _directional_blur(image: np.ndarray, angle: float, length: float) -> np.ndarray:
    """Box motion blur of an (H, W) map over ``length`` pixels along ``angle`` (0 = vertical)."""
    if length < 1.5:
        return image.astype(np.float32, copy=False)
    frame = _StreakFrame(image.shape, angle, 1.0, length / 2 + 1)
    canvas = ndimage.uniform_filter1d(frame.from_image(image), round(length), axis=0, mode="constant")
    return frame.to_image(canvas)


def _composite(
    clean: np.ndarray,
    alpha: np.ndarray,
    colour: np.ndarray,
    t: np.ndarray | None = None,
    airlight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alpha-composite ``colour`` ((3,) or (H, W, 3)) over ``clean`` with opacity ``alpha`` (H, W), then
    an optional veil I = X t + A (1 - t) (``t`` (H, W, 1), ``airlight`` (3,)).

    Returns (degraded, mask = 1 - (1 - alpha) t, particles = alpha), as the family contract asks.
    """
    a = alpha[:, :, None]
    degraded = clean * (1.0 - a) + colour * a
    if t is None:
        return degraded, alpha, alpha
    degraded = degraded * t + airlight * (1.0 - t)
    return degraded, 1.0 - (1.0 - alpha) * t[:, :, 0], alpha
