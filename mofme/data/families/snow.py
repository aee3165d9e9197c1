"""Snow renderer families: generative models of falling snow other than ``snow-classic``.

* ``snow-particles``: three to four depth layers of irregular flakes: each flake a cluster of 3-6
  Gaussian sub-blobs, soft-thresholded into a lumpy shape with a defined edge, then the whole layer
  box-motion-blurred along the wind over a random length (near layers fall faster: longer blur).
  Flakes are alpha-composited in a slightly bluish white.
* ``snow-bokeh``: large out-of-focus flakes close to the lens: few translucent discs or aperture
  polygons (5-8 blades) with a brighter rim, radius log-uniform in 8-45 px, tinted by the blurred
  background, over a sparse layer of small in-focus flakes.
* ``snow-masks``: Snow100K-like snow masks: two to three octaves of sparse thresholded noise
  (blob sizes 3-20 px), each bilinearly upsampled and Gaussian-smeared into soft semi-transparent
  white patches of organic shape, plus large faint smudges (thresholded fBm); no motion blur.
* ``snow-blizzard``: dense fine snow blown almost horizontally: sub-pixel flakes smeared into long
  thin wind streaks, density modulated by gusts (fBm), under a whitish veil that is thicker where
  the gusts are.

PSNR of degraded vs clean (dB) on the 8 built-in photos (long side 512), seeds 0-2,
min / mean / max (a 512 x 512 render takes 15-80 ms on one core, 1024 x 1024 0.2-1.0 s):

    family             severity 1          severity 2          severity 3
    snow-particles     20.2 / 24.4 / 28.9  15.8 / 20.1 / 23.6  12.1 / 14.8 / 18.0
    snow-bokeh         21.9 / 24.2 / 28.6  15.7 / 19.1 / 21.8  13.6 / 15.7 / 18.3
    snow-masks         19.7 / 23.3 / 27.1  16.0 / 19.1 / 22.7  12.2 / 15.0 / 18.1
    snow-blizzard      20.6 / 23.1 / 26.8  15.9 / 18.8 / 22.1  12.2 / 14.8 / 18.7
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..weather import _UNIT_AREA, _resize_bilinear, _smooth, _smoothstep, _splat, _veil
from . import register_family
from ._common import _composite, _directional_blur, _fbm

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# snow-particles: flakes per 100 x 100 px (all layers); snow-bokeh: discs per 512 x 512 image;
# snow-masks: seeded fraction of the finest octave; snow-blizzard: flakes per 100 x 100 px, veil t0
_PARTICLES_DENSITY = {1: 60.0, 2: 150.0, 3: 550.0}
_BOKEH_COUNT = {1: 25.0, 2: 60.0, 3: 150.0}
_MASKS_SEED = {1: 0.011, 2: 0.032, 3: 0.08}
_BLIZZARD = {1: (250.0, 0.97), 2: (500.0, 0.93), 3: (900.0, 0.88)}


def _snow_colour(rng: np.random.Generator) -> np.ndarray:
    """A snow white (3,): grey level 0.88-1 with a faint blue (cold) or warm tint."""
    tint = np.array([-1.0, 0.0, 1.0], np.float32) * rng.uniform(-0.01, 0.03)
    return np.clip(rng.uniform(0.88, 1.0) + tint, 0.0, 1.0).astype(np.float32)


def _lumpy_flakes(
    rng: np.random.Generator, shape: tuple[int, int], density: float, radius: float, scale: float
) -> np.ndarray:
    """A layer of irregular flakes, (H, W) coverage in [0, 1]: ``density`` per 100 x 100 px at scale 1,
    each a cluster of Gaussian sub-blobs around a centre, ``radius`` px (after ``scale``). Flakes under
    a pixel are drawn at one pixel and fainter (same coverage)."""
    h, w = shape
    r = max(1.0, radius)
    count = int(rng.poisson(density * (h + 4 * r) * (w + 4 * r) / (_UNIT_AREA * scale * scale)))
    parts = int(rng.integers(3, 7))
    cy = rng.uniform(-2 * r, h + 2 * r, count)[:, None] + rng.normal(0.0, 0.55 * r, (count, parts))
    cx = rng.uniform(-2 * r, w + 2 * r, count)[:, None] + rng.normal(0.0, 0.55 * r, (count, parts))
    sigma = 0.5 * r
    mass = rng.uniform(0.5, 1.0, (count, 1)) * np.ones((1, parts)) * 2 * math.pi * sigma**2 * 0.6
    field = ndimage.gaussian_filter(_splat(shape, cy.ravel(), cx.ravel(), mass.ravel()), sigma)
    return _smoothstep(0.12, 0.45, field) * min(1.0, radius / r) ** 2


@register_family(
    "snow-particles", "snow", "depth layers of lumpy sub-blob flakes, wind motion blur per layer"
)
def _snow_particles(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    shape = clean.shape[:2]
    wind = float(rng.normal(0.0, math.radians(30)))
    layers = int(rng.integers(3, 5))
    keep = np.ones(shape, np.float32)
    for k in range(layers):
        near = k / (layers - 1)
        radius = scale * (0.8 + 4.2 * near**1.5) * rng.uniform(0.8, 1.25)
        density = _PARTICLES_DENSITY[severity] * (0.05 + (1 - near) ** 2) * rng.uniform(0.7, 1.3) / layers
        layer = _lumpy_flakes(rng, shape, density, radius, scale)
        length = scale * rng.uniform(0.0, 4.0 + 14.0 * near)
        layer = _directional_blur(layer, wind + rng.normal(0.0, 0.1), length)
        keep *= 1.0 - layer * rng.uniform(0.6, 0.95)
    return _composite(clean, 1.0 - keep, _snow_colour(rng))


# ---------------------------------------------------------------------------------------- bokeh
def _bokeh_disc(rng: np.random.Generator, radius: float, blades: int) -> np.ndarray:
    """One out-of-focus flake as a (2R+1, 2R+1) opacity patch: translucent body, brighter rim, soft edge;
    a circle (``blades`` = 0) or a regular polygon with that many aperture blades."""
    half = math.ceil(radius) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    rho = np.hypot(yy, xx) / radius
    if blades:
        phi = np.arctan2(yy, xx) - rng.uniform(0, 2 * math.pi)
        sector = 2 * math.pi / blades
        rho = rho * np.cos(np.mod(phi, sector) - sector / 2) / math.cos(sector / 2)
    edge = 1.0 - _smoothstep(1.0 - 2.0 / max(radius, 2.0) - 0.05, 1.0, rho)
    body = rng.uniform(0.15, 0.35) * (1.0 + rng.uniform(0.0, 0.3) * (1 - rho**2))
    rim = rng.uniform(0.2, 0.45) * np.exp(-(((rho - 0.9) / 0.09) ** 2))
    return (np.clip(body + rim, 0.0, 1.0) * edge).astype(np.float32)


def _bokeh_layer(rng: np.random.Generator, shape: tuple[int, int], count: int, scale: float) -> np.ndarray:
    """``count`` bokeh flakes (radius log-uniform 8-45 px x ``scale``), screen-combined: (H, W) opacity."""
    h, w = shape
    keep = np.ones(shape, np.float32)
    blades = int(rng.choice([0, 0, 5, 6, 7, 8]))
    for _ in range(count):
        radius = scale * math.exp(rng.uniform(math.log(8.0), math.log(45.0)))
        patch = _bokeh_disc(rng, max(radius, 1.5), blades)
        half = patch.shape[0] // 2
        cy, cx = int(rng.integers(-half, h + half)), int(rng.integers(-half, w + half))
        y0, x0 = max(0, cy - half), max(0, cx - half)
        y1, x1 = min(h, cy + half + 1), min(w, cx + half + 1)
        if y0 < y1 and x0 < x1:
            sub = patch[y0 - cy + half : y1 - cy + half, x0 - cx + half : x1 - cx + half]
            keep[y0:y1, x0:x1] *= 1.0 - sub
    return 1.0 - keep


@register_family(
    "snow-bokeh", "snow", "few large defocused flakes (discs/polygons, bright rim) near the lens"
)
def _snow_bokeh(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    h, w = shape = clean.shape[:2]
    count = int(rng.poisson(_BOKEH_COUNT[severity] * h * w / (512.0 * scale) ** 2))
    alpha = _bokeh_layer(rng, shape, count, scale)
    small = _lumpy_flakes(rng, shape, rng.uniform(3.0, 10.0) * severity, 0.9 * scale, scale)
    alpha = 1.0 - (1.0 - alpha) * (1.0 - small * rng.uniform(0.6, 0.9))
    background = _smooth(clean @ _LUMA, 8.0 * scale + 1.0)[:, :, None]
    colour = np.clip(_snow_colour(rng) * rng.uniform(0.75, 0.95) + 0.3 * background, 0.0, 1.0)
    return _composite(clean, alpha, colour)


# ---------------------------------------------------------------------------------------- masks
def _sparse_octave(rng: np.random.Generator, shape: tuple[int, int], cell: float, seed: float) -> np.ndarray:
    """Soft snow patches of about ``cell`` px: a sparse random grid (``seed`` = seeded fraction),
    upsampled bilinearly, smeared and soft-thresholded into (H, W) coverage in [0, 1]."""
    h, w = shape
    grid = (max(2, math.ceil(h / cell) + 1), max(2, math.ceil(w / cell) + 1))
    sparse = np.where(rng.random(grid) < seed, rng.uniform(0.5, 1.0, grid), 0.0)
    big = _resize_bilinear(sparse, (round(grid[0] * cell), round(grid[1] * cell)))[:h, :w]
    big = _smooth(big, 0.35 * cell)
    return _smoothstep(0.05, rng.uniform(0.25, 0.4), big)


@register_family("snow-masks", "snow", "Snow100K-like soft semi-transparent patches from thresholded noise")
def _snow_masks(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    shape = clean.shape[:2]
    keep = np.ones(shape, np.float32)
    for k, base in enumerate((3.0, 8.0, 18.0)[: int(rng.integers(2, 4))]):
        cell = max(1.0, scale * base * rng.uniform(0.8, 1.25))
        seeded = _MASKS_SEED[severity] * rng.uniform(0.7, 1.3) * (1.0 - 0.3 * k)
        keep *= 1.0 - _sparse_octave(rng, shape, cell, seeded) * rng.uniform(0.5, 0.9)
    field = _fbm(rng, shape, max(shape) / (scale * rng.uniform(100.0, 250.0)), octaves=4)
    smudge = _smoothstep(1.0, 2.2, field) * rng.uniform(0.15, 0.35)
    keep *= 1.0 - smudge
    return _composite(clean, 1.0 - keep, _snow_colour(rng))


# ---------------------------------------------------------------------------------------- blizzard
@register_family("snow-blizzard", "snow", "dense fine snow in long wind streaks under a gusty whitish veil")
def _snow_blizzard(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    h, w = shape = clean.shape[:2]
    density, t0 = _BLIZZARD[severity]
    wind = math.copysign(rng.uniform(math.radians(55), math.radians(85)), rng.uniform(-1, 1))
    cells = max(h, w) / (scale * rng.uniform(150.0, 350.0))
    gust = _fbm(rng, shape, cells, octaves=3, stretch=2.0, angle=math.pi / 2 - wind)
    gusty = np.clip(1.0 + 0.6 * gust, 0.2, 2.0)
    count = int(rng.poisson(density * h * w / (_UNIT_AREA * scale * scale)))
    ys, xs = rng.uniform(0, h, count), rng.uniform(0, w, count)
    iy, ix = ys.astype(np.intp), xs.astype(np.intp)
    weights = rng.uniform(0.4, 1.0, count) * gusty[iy, ix] / 2.0
    wanted = 0.6 * scale  # flakes under half a pixel are drawn wider and fainter (same mass)
    flakes = ndimage.gaussian_filter(
        _splat(shape, ys, xs, weights * 2 * math.pi * wanted**2), max(0.5, wanted)
    )
    length = scale * rng.uniform(8.0, 25.0)
    streaks = _directional_blur(np.clip(flakes, 0.0, 1.0), wind, length) * min(4.0, 0.35 * length / scale)
    alpha = np.clip(streaks, 0.0, 1.0) * rng.uniform(0.6, 0.9)
    t, airlight = _veil(rng, shape, t0)
    t = np.clip(t * (1.0 - 0.08 * (gusty[:, :, None] - 1.0)), 0.0, 1.0)
    airlight = np.clip(np.maximum(airlight, 0.85) + np.array([0.0, 0.0, 0.02]), 0.0, 1.0)
    return _composite(clean, alpha, _snow_colour(rng), t, airlight.astype(np.float32))
