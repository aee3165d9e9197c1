"""Rain renderer families: generative models of rain streaks other than ``rain-classic``.

* ``rain-noise``: the augmentation-library recipe. Two to four layers of sparse random noise on a
  grid rotated to the fall direction (cell = drop width), each motion-blurred with a *box* kernel
  along the streaks (hard ends, uniform brightness), softened across and screen-blended; per layer
  its own width, length, density, opacity and a slightly different angle.
* ``rain-perspective``: drops in a 3-D volume seen through a lens. Six depth slices z in [1, 25]:
  streak length and width fall as 1/z, defocus blur grows with |1/z - 1/z_focus|, the count grows
  with depth and a drop is seen only in front of the scene (a ground-plane depth proxy under a
  random horizon), so the lower frame holds only near, long, wide, blurry streaks and the upper
  frame many short faint ones. A distance veil over the scene depth; sometimes splashes on the
  near ground.
* ``rain-fog``: Outdoor-Rain (Li et al. 2019), I = (J + S c) t + A (1 - t): Gaussian-profile
  streaks S *added* (not alpha-blended) to the image, then dense fog with t = exp(-beta d) over a
  depth proxy (vertical gradient, bright = far, fBm). The mask includes the veil.
* ``rain-sheets``: wind-blown sheets of rain: curved streaks (a parabolic bend and an angle that
  follow a smooth wind field) whose density is modulated by warped bands of gusts running roughly
  along the fall, so the rain comes in curtains with thinner rain between them.

Streaks are whitish grey with a slight tint or, in half of the renders, a fixed amount brighter
than the blurred background (visible in dark scenes, transparent in bright ones).

PSNR of degraded vs clean (dB) on the 8 built-in photos (long side 512), seeds 0-2,
min / mean / max (a 512 x 512 render takes 20-80 ms on one core, 1024 x 1024 0.3-0.6 s):

    family             severity 1          severity 2          severity 3
    rain-noise         20.0 / 24.9 / 31.9  14.3 / 18.9 / 25.3  10.1 / 14.4 / 20.3
    rain-perspective   19.7 / 23.9 / 31.3  14.1 / 19.0 / 26.1  10.9 / 15.1 / 20.0
    rain-fog           19.8 / 22.4 / 25.5  15.1 / 18.1 / 21.1  11.1 / 14.5 / 17.7
    rain-sheets        19.1 / 24.1 / 27.7  16.4 / 20.1 / 23.1  12.1 / 16.1 / 20.8
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..weather import _UNIT_AREA, _low_frequency, _segments, _smooth, _splat
from . import register_family
from ._common import _composite, _fbm, _StreakFrame

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# rain-noise: total streak density per 100 x 100 px; rain-perspective: drops per 100 x 100 px (all
# slices), veil strength; rain-fog: scattering coefficient; rain-sheets: streak density
_NOISE_DENSITY = {1: 95.0, 2: 270.0, 3: 620.0}
_PERSPECTIVE = {1: (80.0, 0.15), 2: (170.0, 0.3), 3: (330.0, 0.5)}
_FOG_BETA = {1: 0.08, 2: 0.2, 3: 0.4}
_SHEETS_DENSITY = {1: 25.0, 2: 70.0, 3: 210.0}


def _rain_colour(clean: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Streak colour: a whitish grey (3,) or, half of the time, (H, W, 3) = blurred background + boost."""
    tint = rng.uniform(-0.03, 0.03, 3).astype(np.float32)
    if rng.random() < 0.5:
        return np.clip(rng.uniform(0.7, 1.0) + tint, 0.0, 1.0).astype(np.float32)
    background = _smooth(clean @ _LUMA, 3.0 * scale + 1.0)
    boost = rng.uniform(0.25, 0.45)
    return np.clip(background[:, :, None] + boost + tint, 0.0, 1.0).astype(np.float32)


def _noise_streaks(
    rng: np.random.Generator,
    shape: tuple[int, int],
    angle: float,
    cell: float,
    length: float,
    density: float,
    *,
    box: bool,
) -> np.ndarray:
    """A layer of motion-blurred sparse noise, (H, W) float32 with streak peaks in [0.3, 1].

    Noise on a grid of ``cell``-pixel cells rotated to ``angle``; ``density`` is the number of seeds
    per 100 x 100 image pixels; each seed is smeared over ``length`` pixels along the streak by a box
    kernel (``box``) or a Gaussian one (sigma = length / 4, soft ends). Cells under 0.7 px are drawn
    at 0.7 px and fainter (same coverage).
    """
    faint, cell = min(1.0, cell / 0.7), max(0.7, cell)
    frame = _StreakFrame(shape, angle, cell, length / 2 + 3 * cell)
    seeds = rng.random(frame.canvas_shape) < density * cell * cell / _UNIT_AREA
    canvas = np.where(seeds, rng.uniform(0.3, 1.0, frame.canvas_shape), 0.0).astype(np.float32)
    steps = max(1.0, length / cell)
    if box:
        canvas = ndimage.uniform_filter1d(canvas, round(steps), axis=0, mode="constant") * round(steps)
    else:
        canvas = ndimage.gaussian_filter1d(canvas, steps / 4, axis=0, mode="constant") * (steps / 4 * 2.5)
    canvas = ndimage.gaussian_filter1d(canvas, rng.uniform(0.3, 0.7), axis=1, mode="constant")
    return np.clip(frame.to_image(canvas), 0.0, 1.0) * faint


@register_family("rain-noise", "rain", "screen-blended layers of box-motion-blurred sparse noise")
def _rain_noise(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    shape = clean.shape[:2]
    base = float(np.clip(rng.normal(0.0, math.radians(15)), -math.radians(40), math.radians(40)))
    layers = int(rng.integers(2, 5))
    keep = np.ones(shape, np.float32)
    for k in range(layers):
        near = k / (layers - 1)  # 0 = far (thin, short, dense), 1 = near (wide, long, sparse)
        cell = scale * (0.6 + 1.4 * near) * rng.uniform(0.8, 1.25)
        length = scale * (12.0 + 45.0 * near) * rng.uniform(0.7, 1.3)
        density = _NOISE_DENSITY[severity] * (1.6 - 1.2 * near) * rng.uniform(0.6, 1.4) / layers
        angle = base + rng.normal(0.0, math.radians(1.5))
        layer = _noise_streaks(rng, shape, angle, cell, length, density / scale**2, box=True)
        keep *= 1.0 - layer * rng.uniform(0.35, 0.75) * (0.7 + 0.3 * near)
    return _composite(clean, 1.0 - keep, _rain_colour(clean, rng, scale))


# ---------------------------------------------------------------------------------------- perspective
def _ground_depth(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Scene depth (H, W) in drop-depth units: a ground plane under a random horizon (the bottom row
    at depth 1.5-4), modulated by a smooth field (objects); the sky is at depth 1000."""
    h = shape[0]
    horizon = rng.uniform(0.2, 0.6) * h
    bottom = rng.uniform(1.5, 4.0)
    rows = np.arange(h, dtype=np.float32) + 0.5
    ground = bottom * (h - horizon) / np.maximum(rows - horizon, 1e-3)
    depth = np.minimum(ground, 1000.0)[:, None] * np.exp(0.3 * _low_frequency(rng, shape, cells=3))
    return np.minimum(depth, 1000.0).astype(np.float32)


def _splashes(rng: np.random.Generator, depth: np.ndarray, scale: float, density: float) -> np.ndarray:
    """Flat bright crowns of splashing drops on the near ground (depth < 3), (H, W) opacity."""
    h, w = depth.shape
    count = int(rng.poisson(density * h * w / (_UNIT_AREA * scale * scale)))
    ys, xs = rng.uniform(0, h, count), rng.uniform(0, w, count)
    sy, sx = 0.6 * scale, rng.uniform(1.2, 2.2) * scale  # drawn at >= 0.5 px with the same mass
    peak = rng.uniform(0.3, 0.8, count) * 2 * math.pi * sy * sx
    layer = _splat((h, w), ys, xs, peak)
    layer = ndimage.gaussian_filter(layer, (max(0.5, sy), max(0.5, sx)), mode="constant")
    return np.clip(layer, 0.0, 1.0) * np.clip((3.0 - depth) / 1.5, 0.0, 1.0)


@register_family("rain-perspective", "rain", "depth slices of streaks (1/z size, defocus, occlusion) + veil")
def _rain_perspective(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    shape = clean.shape[:2]
    density, veil = _PERSPECTIVE[severity]
    depth = _ground_depth(rng, shape)
    angle = float(np.clip(rng.normal(0.0, math.radians(12)), -math.radians(35), math.radians(35)))
    near_length, near_width = rng.uniform(60.0, 110.0), rng.uniform(1.2, 2.2)
    focus, defocus = rng.uniform(3.0, 8.0), rng.uniform(2.0, 4.0)
    fog = rng.uniform(0.5, 1.5)
    slices = np.geomspace(1.0, 25.0, 6)
    weights = slices**1.2 / np.sum(slices**1.2)
    keep = np.ones(shape, np.float32)
    for z, share in zip(slices, weights, strict=True):
        width = near_width / z
        sigma = math.hypot(max(width, 0.5), defocus * abs(1.0 / z - 1.0 / focus))
        peak = rng.uniform(0.5, 0.9) * min(1.0, width / sigma) * math.exp(-fog * z / 25.0)
        length = near_length / z
        layer = _segments(
            rng, shape, density * share, scale, (0.7 * length, length), angle,
            math.radians(2.0), sigma, (0.5 * peak, peak), taper=True,
        )  # fmt: skip
        visible = 1.0 / (1.0 + (z / depth) ** 8)  # the drop is in front of the scene
        keep *= 1.0 - np.clip(layer, 0.0, 1.0) * visible
    if rng.random() < 0.6:
        keep *= 1.0 - _splashes(rng, depth, scale, rng.uniform(2.0, 6.0) * severity)
    t = np.exp(-veil * rng.uniform(0.7, 1.3) * np.minimum(depth, 25.0) / 25.0)[:, :, None]
    airlight = np.clip(rng.uniform(0.75, 0.95) + rng.uniform(-0.02, 0.02, 3), 0.0, 1.0)
    return _composite(clean, 1.0 - keep, _rain_colour(clean, rng, scale), t, airlight.astype(np.float32))


# ---------------------------------------------------------------------------------------- fog
def _fog_depth(rng: np.random.Generator, clean: np.ndarray) -> np.ndarray:
    """A [0, 1] depth proxy (1 = far): tilted vertical gradient, bright = far, fBm clouds."""
    h, w = clean.shape[:2]
    tilt = rng.uniform(-0.4, 0.4)
    yy = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    bright = _smooth(clean @ _LUMA, max(h, w) / 32.0)
    field = _fbm(rng, (h, w), rng.uniform(1.5, 3.0), octaves=3)
    depth = 0.6 * np.clip(yy + tilt * xx, 0, 1) + 0.25 * bright + 0.15 * np.clip(0.5 + 0.3 * field, 0, 1)
    return ((depth - depth.min()) / (depth.max() - depth.min() + 1e-6)).astype(np.float32)


@register_family("rain-fog", "rain", "Outdoor-Rain: additive Gaussian streaks, then dense depth fog")
def _rain_fog(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    shape = clean.shape[:2]
    angle = float(np.clip(rng.normal(0.0, math.radians(15)), -math.radians(40), math.radians(40)))
    streaks = np.zeros(shape, np.float32)
    for near in (0.0, 1.0):
        cell = scale * (0.7 + 0.8 * near) * rng.uniform(0.8, 1.25)
        length = scale * (15.0 + 30.0 * near) * rng.uniform(0.7, 1.3)
        density = (25.0 + 15.0 * severity) * (1.5 - near) * rng.uniform(0.7, 1.3)
        theta = angle + rng.normal(0.0, 0.02)
        layer = _noise_streaks(rng, shape, theta, cell, length, density / scale**2, box=False)
        streaks += layer * rng.uniform(0.3, 0.6)
    streaks = np.clip(streaks, 0.0, 1.0)
    t = np.exp(-_FOG_BETA[severity] * rng.uniform(0.8, 1.2) * (0.2 + 1.8 * _fog_depth(rng, clean)))
    t = t[:, :, None].astype(np.float32)
    airlight = np.clip(rng.uniform(0.7, 0.95) + rng.uniform(-0.03, 0.03, 3), 0.0, 1.0).astype(np.float32)
    colour = np.clip(rng.uniform(0.7, 1.0) + rng.uniform(-0.03, 0.03, 3), 0.0, 1.0).astype(np.float32)
    degraded = (clean + streaks[:, :, None] * colour) * t + airlight * (1.0 - t)
    return degraded, 1.0 - (1.0 - streaks) * t[:, :, 0], streaks


# ---------------------------------------------------------------------------------------- sheets
def _curved_streaks(
    rng: np.random.Generator, shape: tuple[int, int], scale: float, density: np.ndarray, wind: np.ndarray
) -> np.ndarray:
    """Curved tapered streaks, (H, W) opacity: centres thinned by ``density`` (H, W, in [0, 1]), each
    streak at the local ``wind`` angle (H, W, radians) with a random parabolic bend."""
    h, w = shape
    length_px = rng.uniform(20.0, 45.0) * scale
    margin = length_px
    count = int(rng.poisson(100.0 * (h + 2 * margin) * (w + 2 * margin) / (_UNIT_AREA * scale**2)))
    cy, cx = rng.uniform(-margin, h + margin, count), rng.uniform(-margin, w + margin, count)
    iy, ix = np.clip(cy, 0, h - 1).astype(np.intp), np.clip(cx, 0, w - 1).astype(np.intp)
    keep = rng.random(count) < density[iy, ix]
    cy, cx, theta = cy[keep], cx[keep], wind[iy[keep], ix[keep]]
    length = rng.uniform(0.5, 1.0, cy.size) * length_px
    bend = rng.normal(rng.uniform(-0.06, 0.06), 0.015, cy.size) * length  # one curl per render
    t = np.linspace(-0.5, 0.5, max(2, math.ceil(length_px / 0.5)))
    along, across = length[:, None] * t, bend[:, None] * (4 * t * t - 1)
    ys = cy[:, None] + np.cos(theta)[:, None] * along - np.sin(theta)[:, None] * across
    xs = cx[:, None] + np.sin(theta)[:, None] * along + np.cos(theta)[:, None] * across
    wanted = rng.uniform(0.5, 1.0) * scale  # drawn at >= 0.5 px with the same mass
    peak = rng.uniform(0.3, 0.8, cy.size)[:, None] * np.sin(np.pi * (t + 0.5))[None, :] ** 0.5
    weights = peak * (2 * math.pi) ** 0.5 * wanted * (length[:, None] / t.size)
    layer = _splat(shape, ys.ravel(), xs.ravel(), weights.ravel())
    layer = ndimage.gaussian_filter(layer, max(0.5, wanted), mode="constant", truncate=3.0)
    return np.clip(layer, 0.0, 1.0)


@register_family("rain-sheets", "rain", "curved streaks in wind-blown curtains (banded, gusty density)")
def _rain_sheets(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    h, w = shape = clean.shape[:2]
    base = float(np.clip(rng.normal(0.0, math.radians(20)), -math.radians(35), math.radians(35)))
    wind = base + math.radians(12) * _low_frequency(rng, shape, cells=3)
    direction = base + math.pi / 2 + rng.normal(0.0, 0.15)  # curtains run roughly along the fall
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(60.0, 160.0) * scale
    phase = (yy * math.cos(direction) + xx * math.sin(direction)) * (2 * math.pi / period)
    bands = 0.5 + 0.5 * np.sin(phase + 1.5 * _low_frequency(rng, shape, cells=2) + rng.uniform(0, 6.3))
    density = np.clip((0.2 + 0.8 * bands**2) * _SHEETS_DENSITY[severity] / 100.0, 0.0, 1.0)
    alpha = _curved_streaks(rng, shape, scale, density, wind.astype(np.float32))
    t = np.float32(1.0 - 0.04 * severity) * (1.0 - 0.05 * bands[:, :, None])
    airlight = np.clip(rng.uniform(0.75, 0.95) + rng.uniform(-0.02, 0.02, 3), 0.0, 1.0).astype(np.float32)
    return _composite(clean, alpha, _rain_colour(clean, rng, scale), t, airlight)
