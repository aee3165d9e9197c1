"""Haze renderer families: four generative models of fog besides ``haze-classic``.

All four use the scattering model I = J t + A (1 - t) with the transmission t and airlight A drawn
differently; ``mask = 1 - weight of J`` and ``particles = 0``.

* ``haze-depth``: a ground plane under a horizon line at a random height (10-60 % from the top) and
  roll: depth grows as 1 / (distance below the horizon) up to a far limit reached at the horizon and
  in the sky above it, pulled nearer where a blurred dark channel (min over RGB, min-filtered) is low
  (dark or saturated things stand in front). t = exp(-beta d); the airlight has a random colour
  (neutral, yellowish smog, bluish mist) and brightens towards the horizon.
* ``haze-fractal``: non-homogeneous fog. A multi-octave fBm field (random roughness, banks stretched
  up to 3.5x along a random near-horizontal direction) is turned into a log-normal density with
  mean 1 and a random ground-fog gradient; t = exp(-beta density), so patches and banks of thick fog
  alternate with clear holes. The neutral-to-cool airlight is brighter in the thick banks (lit fog).
  Feature sizes follow ``scale``.
* ``haze-night``: night fog. A dim, coloured airlight (sodium orange, mercury blue or grey, 0.12-0.4)
  over a gently varying density, a small exposure drop, and glow: the clean image's bright pixels,
  spread by wide Gaussians (two radii, scaled by ``scale``; large bright areas such as a sky count
  less), are added in proportion to the fog (1 - t). The image darkens; lights bloom.
* ``haze-banks``: drifting fog banks. A thin veil everywhere plus a few large, flattened,
  soft-edged elliptic banks (radius 60-260 px of a 512-px image times ``scale``, 1.5-5 per
  512 ``scale`` square, outlines warped by a smooth field), their optical depths added; banks are lit
  a little brighter or darker than the veil. Unlike ``haze-fractal`` (a field of fog at every scale),
  most of the frame sees only the veil and the banks have edges.

PSNR of degraded vs clean (dB), the 8 built-in photos (train, val, test splits; long side 512), seeds
0-2, min / mean / max:

    family         severity 1          severity 2          severity 3
    haze-depth     17.3 / 22.8 / 29.2  12.6 / 17.8 / 24.0  9.8 / 14.6 / 20.6
    haze-fractal   17.6 / 23.2 / 29.1  13.6 / 18.0 / 23.4  11.6 / 15.1 / 20.0
    haze-night     17.5 / 21.5 / 28.0  12.8 / 16.9 / 23.0  10.3 / 14.4 / 20.1
    haze-banks     19.1 / 22.6 / 28.3  14.3 / 17.8 / 23.2  11.7 / 15.0 / 20.2

A 1024 x 1024 render takes about 30-160 ms on one CPU core; a 128 x 128 crop 2-8 ms.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..weather import _REFERENCE_SIZE, _low_frequency, _smooth, _smoothstep
from . import register_family
from ._common import _fbm

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# scattering coefficient per severity (each jittered +-15 % per render)
_DEPTH_BETA = {1: 0.34, 2: 0.67, 3: 1.1}
_FRACTAL_BETA = {1: 0.18, 2: 0.37, 3: 0.58}
_NIGHT_BETA = {1: 0.25, 2: 0.5, 3: 0.8}
_BANKS_BETA = {1: 0.3, 2: 0.6, 3: 0.95}
# airlight tints: neutral, yellowish smog, bluish mist, cool grey
_DAY_TINTS = np.array([[1.0, 1.0, 1.0], [1.0, 0.93, 0.74], [0.84, 0.92, 1.0], [0.95, 0.97, 1.0]], np.float32)
# night airlight tints: sodium orange, mercury blue-green, grey
_NIGHT_TINTS = np.array([[1.0, 0.72, 0.42], [0.62, 0.78, 1.0], [0.85, 0.85, 0.9]], np.float32)


def _scatter(clean: np.ndarray, t: np.ndarray, airlight: np.ndarray) -> np.ndarray:
    """I = J t + A (1 - t) for t (H, W) and A (3,) or (H, W, 3)."""
    t3 = t[:, :, None]
    return clean * t3 + airlight * (1.0 - t3)


def _beta(rng: np.random.Generator, table: dict[int, float], severity: int) -> float:
    return table[severity] * float(rng.uniform(0.85, 1.15))


def _tinted(rng: np.random.Generator, tints: np.ndarray, level: float) -> np.ndarray:
    """A random tint from ``tints`` (rows of RGB), mixed towards grey by a random amount, times level."""
    tint = tints[rng.integers(len(tints))]
    mix = rng.uniform(0.5, 1.0)
    return (level * (mix * tint + (1.0 - mix))).astype(np.float32)


# ---------------------------------------------------------------------------------------------- haze-depth
def _ground_plane_depth(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) depth in (0, 1): ~ 1 / (distance below a random horizon line), -> 1 at and above it."""
    h, w = shape
    horizon, roll = rng.uniform(0.1, 0.6), rng.normal(0.0, 0.1)
    near = rng.uniform(0.08, 0.25)  # depth at the bottom of the frame (fraction of the far limit)
    yy = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    xx = (((np.arange(w, dtype=np.float32) + 0.5) / w - 0.5) * (w / h))[None, :]
    below = yy - horizon - roll * xx  # image heights below the horizon (negative: sky)
    ground = near * (1.0 - horizon) / np.maximum(below, 1e-3)
    return 1.0 - np.exp(-ground)  # ~ ground near the camera, saturating smoothly at the horizon


def _dark_channel(clean: np.ndarray, scale: float) -> np.ndarray:
    """A blurred dark channel (H, W) in [0, 1], normalised to max 1: low on dark or saturated objects."""
    size = max(3, round(15 * scale))
    dark = ndimage.minimum_filter(clean.min(axis=2), size=size, mode="nearest")
    dark = _smooth(dark, size)
    return dark / (dark.max() + 1e-6)


@register_family(
    "haze-depth", "haze", "scattering over a ground-plane depth under a random horizon, tinted airlight"
)
def _haze_depth(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    h, w = clean.shape[:2]
    depth = _ground_plane_depth(rng, (h, w))
    cue = rng.uniform(0.15, 0.5)  # how much dark, saturated things are pulled nearer
    depth = depth * (1.0 - cue + cue * _dark_channel(clean, scale))
    t = np.exp(-_beta(rng, _DEPTH_BETA, severity) * depth).astype(np.float32)
    airlight = _tinted(rng, _DAY_TINTS, rng.uniform(0.72, 1.0))
    glow = rng.uniform(0.0, 0.15)  # the airlight brightens towards the far limit
    airlight = airlight * (1.0 - glow + glow * depth)[:, :, None]
    return _scatter(clean, t, airlight), 1.0 - t, np.zeros((h, w), np.float32)


# -------------------------------------------------------------------------------------------- haze-fractal
@register_family(
    "haze-fractal", "haze", "patchy non-homogeneous fog: log-normal fBm density with drifting banks"
)
def _haze_fractal(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    h, w = clean.shape[:2]
    cells = rng.uniform(1.5, 4.0) * max(h, w) / (_REFERENCE_SIZE * scale)
    field = _fbm(
        rng,
        (h, w),
        cells,
        octaves=6,
        persistence=rng.uniform(0.45, 0.65),
        stretch=rng.uniform(1.0, 3.5),
        angle=rng.normal(0.0, 0.3),
    )
    contrast = rng.uniform(0.5, 1.0)
    density = np.exp(contrast * field - 0.5 * contrast * contrast)  # log-normal, mean 1
    ground = rng.uniform(-0.3, 0.8)  # > 0: denser near the bottom of the frame
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    density = density * (1.0 + ground * yy)
    t = np.exp(-_beta(rng, _FRACTAL_BETA, severity) * density).astype(np.float32)
    cool = rng.uniform(0.0, 0.08)  # water fog: neutral to slightly blue-white (smog is haze-depth's)
    airlight = (rng.uniform(0.72, 0.95) * np.array([1.0 - cool, 1.0 - cool / 2, 1.0])).astype(np.float32)
    shade = rng.uniform(0.03, 0.1)  # thick banks are lit brighter, thin veils darker
    airlight = np.clip(airlight * (1.0 + shade * np.clip(field, -2.0, 2.0))[:, :, None], 0.0, 1.0)
    return _scatter(clean, t, airlight), 1.0 - t, np.zeros((h, w), np.float32)


# ---------------------------------------------------------------------------------------------- haze-night
def _glow(clean: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """(H, W, 3) light scattered around the bright pixels: bright parts blurred at two wide radii."""
    light = _smoothstep(rng.uniform(0.75, 0.92), 1.0, clean @ _LUMA)
    sources = clean * (light / max(1.0, 20.0 * float(light.mean())))[:, :, None]  # big bright areas: dimmer
    near, far = rng.uniform(4.0, 10.0) * scale, rng.uniform(20.0, 45.0) * scale
    mix = rng.uniform(0.3, 0.7)
    return np.stack(
        [
            mix * _smooth(sources[:, :, c], near) + (1 - mix) * _smooth(sources[:, :, c], far)
            for c in range(3)
        ],
        axis=2,
    )


@register_family("haze-night", "haze", "night fog: dim coloured airlight, exposure drop, glow around lights")
def _haze_night(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    h, w = clean.shape[:2]
    cells = rng.uniform(1.0, 2.5) * max(h, w) / (_REFERENCE_SIZE * scale)
    density = 1.0 + 0.25 * _fbm(rng, (h, w), cells, octaves=3, persistence=0.5)
    yy = np.linspace(0.5, -0.5, h, dtype=np.float32)[:, None]
    density = np.clip(density * (1.0 + rng.uniform(0.0, 0.5) * yy), 0.2, None)  # top of the frame = far
    t = np.exp(-_beta(rng, _NIGHT_BETA, severity) * density).astype(np.float32)
    exposure = 1.0 - rng.uniform(0.04, 0.1) * severity
    airlight = _tinted(rng, _NIGHT_TINTS, rng.uniform(0.12, 0.4))
    bloom = rng.uniform(1.0, 2.5) * _glow(clean, rng, scale) * (1.0 - t)[:, :, None]
    keep = (exposure * t).astype(np.float32)
    degraded = clean * keep[:, :, None] + airlight * (1.0 - t)[:, :, None] + bloom
    return degraded, 1.0 - keep, np.zeros((h, w), np.float32)


# ---------------------------------------------------------------------------------------------- haze-banks
def _bank_profiles(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> list[np.ndarray]:
    """(H, W) profiles in [0, 1] of a few soft-edged elliptic fog banks, outlines warped by one field."""
    h, w = shape
    unit = _REFERENCE_SIZE * scale  # the side of a reference 512-px image, in pixels
    count = max(1, int(rng.poisson(rng.uniform(1.5, 5.0) * h * w / unit**2)))
    warp = rng.uniform(0.0, 0.3) * _low_frequency(rng, shape, cells=int(rng.integers(3, 7)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    profiles = []
    for _ in range(count):
        radius = rng.uniform(60.0, 260.0) * scale
        cy, cx = rng.uniform(-0.2 * radius, h + 0.2 * radius), rng.uniform(-0.2 * radius, w + 0.2 * radius)
        angle, flat = rng.normal(0.0, 0.35), rng.uniform(0.25, 1.0)
        u = (np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)) / radius
        v = (-np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy)) / (radius * flat)
        distance = np.sqrt(u * u + v * v) * (1.0 + warp)
        profiles.append(_smoothstep(1.0, 1.0 - rng.uniform(0.3, 1.0), distance).astype(np.float32))
    return profiles


@register_family(
    "haze-banks", "haze", "drifting fog banks: a few large soft-edged blobs of dense fog over a thin veil"
)
def _haze_banks(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    h, w = clean.shape[:2]
    profiles = _bank_profiles(rng, (h, w), scale)
    amplitudes = rng.uniform(0.6, 1.4, len(profiles))
    density = rng.uniform(0.05, 0.35) + sum(a * p for a, p in zip(amplitudes, profiles, strict=True))
    t = np.exp(-_beta(rng, _BANKS_BETA, severity) * density).astype(np.float32)
    airlight = _tinted(rng, _DAY_TINTS, rng.uniform(0.7, 0.98))
    shades = rng.uniform(-1.0, 1.0, len(profiles))  # each bank lit a little brighter or darker
    weight = sum(profiles) + 1e-3
    shade = rng.uniform(0.0, 0.1) * sum(s * p for s, p in zip(shades, profiles, strict=True)) / weight
    airlight = np.clip(airlight * (1.0 + shade)[:, :, None], 0.0, 1.0)
    return _scatter(clean, t, airlight), 1.0 - t, np.zeros((h, w), np.float32)
