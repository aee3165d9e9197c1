"""A deterministic adverse-weather renderer for float RGB images.

``render_weather(clean, weather, severity=..., seed=...)`` turns a clean float32 (H, W, 3) image in [0, 1]
into a degraded one with the same shape, plus a per-pixel degradation mask. All randomness comes from
``np.random.default_rng(seed)``: the same (image, weather, severity, seed, scale) gives a bit-identical
result, another seed a different one. Severity 1 = light, 2 = medium, 3 = heavy.

Every type is an alpha composite of the clean image J with degradation layers, so the mask has one
meaning for all of them: ``mask = 1 - (weight of J(p) in the degraded pixel)``, in [0, 1].

* ``rain``: two layers of motion-blurred streaks (far: short, thin, dense; near: long, wide, sparse) at
  one random angle per image (splatted along line segments, Gaussian width), screen-blended, then a
  near-uniform veil as in Outdoor-Rain (Li et al. 2019): I = (J (1 - R) + c R) t + A (1 - t).
* ``snow``: three flake layers (small / medium / large Gaussian dots, flat-topped by clipping, each with
  a short motion blur along a random wind direction) alpha-blended in white; heavy snow adds a light veil.
* ``haze``: atmospheric scattering I = J t + A (1 - t), t = exp(-beta d), with a depth proxy d built from
  a vertical gradient (top = far), smoothed luminance (bright = far, like sky) and a random
  low-frequency field; airlight A in [0.8, 1.0] (grey with a slight tint).
* ``raindrop``: drops on the lens: irregular ellipses showing an inverted, magnified (refracted) view of a
  blurred neighbourhood, with a dark rim and a small specular highlight, composited with a soft alpha.

Feature sizes (streak length, flake and drop radii, blur) are in pixels times ``scale``; the default
``scale = max(H, W) / 512`` makes a render look the same at any resolution. Pass ``scale`` explicitly to
render a crop as if it were part of a larger photo.

PSNR of degraded vs clean (dB, RGB, [0, 1] range), measured on the 7 built-in photos (long side resized
to 512) with seeds 0-2, min / mean / max:

    weather    severity 1          severity 2          severity 3
    rain       21.6 / 23.9 / 27.0  16.0 / 18.2 / 20.9  12.1 / 14.4 / 16.4
    snow       20.8 / 22.8 / 25.0  15.2 / 17.4 / 19.5  11.8 / 13.9 / 16.1
    haze       16.5 / 20.7 / 25.1  12.6 / 16.6 / 20.9  10.3 / 14.2 / 18.4
    raindrop   21.2 / 26.2 / 33.9  16.3 / 20.4 / 28.0  14.2 / 18.2 / 26.0

Means fall in 14-26 dB; dark photos (the night-time rocket) under haze go lowest, smooth close-ups under
raindrops highest. A 512 x 512 render takes about 10-35 ms on one CPU core (raindrop heavy: 60-90 ms).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = ["SEVERITIES", "WEATHER_TYPES", "WeatherSample", "derive_seed", "render_weather"]

WEATHER_TYPES: tuple[str, ...] = ("rain", "snow", "haze", "raindrop")
SEVERITIES: tuple[int, ...] = (1, 2, 3)
_REFERENCE_SIZE = 512.0  # feature sizes below are in pixels of a 512-pixel image (scale = 1)
_UNIT_AREA = 100.0 * 100.0  # densities are counts per 100 x 100 pixels at scale = 1


def derive_seed(*values: int) -> int:
    """A 63-bit render seed from integers (numpy's SeedSequence): independent seeds for, e.g.,
    (seed, photo, weather, severity, render), stable across runs and platforms."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)[0] >> 1)


# rain: per layer (density, length px, width sigma px, peak opacity); veil transmission t0
_RAIN_LAYERS = {
    1: ((40.0, 12.0, 0.55, 0.30), (5.0, 26.0, 0.9, 0.40)),
    2: ((70.0, 16.0, 0.6, 0.36), (9.0, 34.0, 1.0, 0.48)),
    3: ((95.0, 20.0, 0.65, 0.40), (12.0, 44.0, 1.15, 0.52)),
}
_RAIN_VEIL = {1: 0.93, 2: 0.86, 3: 0.79}
# snow: per layer (density, sigma px, max motion length px, peak opacity range); veil transmission
_SNOW_LAYERS = {
    1: ((40.0, 0.6, 2.0, (0.5, 0.9)), (6.0, 1.3, 3.0, (0.6, 1.0)), (0.8, 2.6, 4.0, (0.7, 1.0))),
    2: ((90.0, 0.6, 3.0, (0.5, 0.9)), (14.0, 1.4, 4.0, (0.6, 1.0)), (2.0, 2.8, 5.0, (0.7, 1.0))),
    3: ((130.0, 0.65, 4.0, (0.5, 0.9)), (21.0, 1.5, 5.0, (0.6, 1.0)), (3.5, 3.0, 6.0, (0.7, 1.0))),
}
_SNOW_VEIL = {1: 1.0, 2: 0.95, 3: 0.88}
# haze: scattering coefficient beta (jittered +-15 %) over a depth proxy in [0.1, 1]
_HAZE_BETA = {1: 0.35, 2: 0.6, 3: 0.85}
# raindrop: drops per 512 x 512 image, radius range px
_DROPS = {1: (30, 10.0, 30.0), 2: (50, 12.0, 40.0), 3: (65, 14.0, 46.0)}


class WeatherSample(NamedTuple):
    """One render: ``degraded`` and ``clean`` float32 (H, W, 3) in [0, 1], ``mask`` float32 (H, W) in
    [0, 1] (1 - weight of the clean pixel), the ``weather`` name, the ``severity`` (1..3) and
    ``particles`` float32 (H, W) in [0, 1]: the opacity of the streaks, flakes or drops alone, without
    the veil (zero for haze; None where unknown). ``mask`` >= ``particles`` everywhere."""

    degraded: np.ndarray
    clean: np.ndarray
    mask: np.ndarray
    weather: str
    severity: int
    particles: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------- helpers
def _as_image(clean: np.ndarray) -> np.ndarray:
    array = np.asarray(clean)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 2 or array.shape[1] < 2:
        raise ValueError(f"expected an (H, W, 3) image with H, W >= 2, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    return np.clip(array, 0.0, 1.0).astype(np.float32, copy=False)


def _resize_bilinear(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D array (pixel-centre aligned, edge-clamped)."""
    out = small.astype(np.float32)
    for axis, size in enumerate(shape):
        n = out.shape[axis]
        pos = np.clip((np.arange(size, dtype=np.float32) + 0.5) * (n / size) - 0.5, 0, n - 1)
        lo = np.floor(pos).astype(np.intp)
        hi = np.minimum(lo + 1, n - 1)
        frac = (pos - lo).reshape((-1, 1) if axis == 0 else (1, -1))
        out = np.take(out, lo, axis=axis) * (1 - frac) + np.take(out, hi, axis=axis) * frac
    return out


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-D array; large sigmas run on a block-averaged copy (fast, same look)."""
    factor = max(1, int(sigma // 3))
    if factor == 1:
        return ndimage.gaussian_filter(image, sigma, mode="reflect", truncate=3.0)
    h, w = image.shape
    hs, ws = max(1, h // factor), max(1, w // factor)
    small = image[: hs * factor, : ws * factor].reshape(hs, factor, ws, factor).mean(axis=(1, 3))
    small = ndimage.gaussian_filter(small, sigma / factor, mode="reflect", truncate=3.0)
    return _resize_bilinear(small, (h, w))


def _low_frequency(rng: np.random.Generator, shape: tuple[int, int], cells: int = 4) -> np.ndarray:
    """A smooth random field with about ``cells`` blobs across, zero mean and unit std (float32)."""
    grid = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    fine = ndimage.gaussian_filter(_resize_bilinear(grid, (8 * (cells + 2),) * 2), 4.0, mode="reflect")
    field = _resize_bilinear(fine[4:-4, 4:-4], shape)
    return (field - field.mean()) / (field.std() + 1e-6)


def _splat(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bilinearly splat point masses onto an (H, W) float32 grid; points outside are dropped."""
    h, w = shape
    y0, x0 = np.floor(ys), np.floor(xs)
    fy, fx = ys - y0, xs - x0
    y0, x0 = y0.astype(np.intp), x0.astype(np.intp)
    idx, val = [], []
    for dy, dx, wt in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        idx.append(yy[ok] * w + xx[ok])
        val.append((weights * wt)[ok])
    flat = np.bincount(np.concatenate(idx), weights=np.concatenate(val), minlength=h * w)
    return flat.reshape(h, w).astype(np.float32)


def _segments(
    rng: np.random.Generator,
    shape: tuple[int, int],
    density: float,
    scale: float,
    lengths: tuple[float, float],
    angle: float,
    angle_jitter: float,
    sigma: float,
    peaks: tuple[float, float],
    *,
    taper: bool,
) -> np.ndarray:
    """A layer of Gaussian-width line segments (streaks, motion-blurred flakes); peak values in ``peaks``.

    ``density`` is a count per 100 x 100 pixels at scale 1; ``lengths`` (px, before ``scale``) is the
    range of segment lengths; ``angle`` (radians, 0 = vertical) the mean direction.
    """
    h, w = shape
    wanted = sigma * scale
    sigma = max(0.5, wanted)  # below half a pixel a thin feature is drawn wider and fainter (same mass)
    lo_len, hi_len = (max(0.0, v * scale) for v in lengths)
    margin = hi_len / 2 + 3 * sigma
    area = (h + 2 * margin) * (w + 2 * margin)
    count = int(rng.poisson(density * area / (_UNIT_AREA * scale * scale)))
    cy = rng.uniform(-margin, h + margin, count)
    cx = rng.uniform(-margin, w + margin, count)
    length = rng.uniform(lo_len, hi_len, count)
    theta = angle + rng.normal(0.0, angle_jitter, count)
    peak = rng.uniform(*peaks, count)
    steps = max(2, math.ceil(hi_len / 0.5) + 1)
    t = np.linspace(-0.5, 0.5, steps, dtype=np.float64)
    profile = np.sin(np.pi * (t + 0.5) * 0.9 + 0.05 * np.pi) ** 0.5 if taper else np.ones_like(t)
    profile = profile / profile.mean()
    ys = cy[:, None] + np.cos(theta)[:, None] * length[:, None] * t[None, :]
    xs = cx[:, None] + np.sin(theta)[:, None] * length[:, None] * t[None, :]
    root = math.sqrt(2 * math.pi) * wanted  # mass that makes a blurred segment of length L peak at 1
    mass = peak * root * (length + root)
    weights = (mass[:, None] / steps) * profile[None, :]
    layer = _splat(shape, ys.ravel(), xs.ravel(), weights.ravel())
    return ndimage.gaussian_filter(layer, sigma, mode="constant", truncate=3.0)


def _veil(rng: np.random.Generator, shape: tuple[int, int], t0: float) -> tuple[np.ndarray, np.ndarray]:
    """Near-uniform transmission t (H, W, 1) around ``t0`` (+-5 % low-frequency) and airlight A (3,)."""
    airlight = (rng.uniform(0.8, 1.0) + rng.uniform(-0.02, 0.02, 3)).astype(np.float32)
    if t0 >= 1.0:
        return np.ones((*shape, 1), np.float32), airlight
    t = t0 * (1.0 + 0.05 * _low_frequency(rng, shape, cells=3))
    return np.clip(t, 0.0, 1.0)[:, :, None].astype(np.float32), np.clip(airlight, 0.0, 1.0)


def _bilinear_sample(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample an (H, W, C) image at float coordinates (mirrored at the borders); returns (..., C)."""
    h, w = image.shape[:2]
    ys = np.clip((h - 1) - np.abs((h - 1) - np.abs(ys)), 0, h - 1)
    xs = np.clip((w - 1) - np.abs((w - 1) - np.abs(xs)), 0, w - 1)
    y0 = np.minimum(np.floor(ys).astype(np.intp), h - 2)
    x0 = np.minimum(np.floor(xs).astype(np.intp), w - 2)
    fy = (ys - y0)[..., None]
    fx = (xs - x0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    u = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return u * u * (3 - 2 * u)


# ---------------------------------------------------------------------------------------------- weathers
def _rain(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    shape = clean.shape[:2]
    angle = float(np.clip(rng.normal(0.0, math.radians(12)), -math.radians(35), math.radians(35)))
    keep = np.ones(shape, np.float32)  # (1 - R): screen blend of the streak layers
    for density, length, sigma, opacity in _RAIN_LAYERS[severity]:
        layer = _segments(
            rng,
            shape,
            density,
            scale,
            (0.6 * length, length),
            angle,
            math.radians(2.0),
            sigma,
            (0.4 * opacity, opacity),
            taper=True,
        )
        keep *= 1.0 - np.clip(layer, 0.0, 1.0)
    color = np.float32(rng.uniform(0.85, 1.0))
    t, airlight = _veil(rng, shape, _RAIN_VEIL[severity])
    streaked = clean * keep[:, :, None] + color * (1.0 - keep[:, :, None])
    degraded = streaked * t + airlight * (1.0 - t)
    return degraded, 1.0 - keep * t[:, :, 0], 1.0 - keep


def _snow(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    shape = clean.shape[:2]
    wind = float(rng.normal(0.0, math.radians(25)))
    keep = np.ones(shape, np.float32)
    for density, sigma, motion, peaks in _SNOW_LAYERS[severity]:
        layer = _segments(
            rng, shape, density, scale, (0.0, motion), wind, math.radians(15), sigma, peaks, taper=False
        )
        keep *= 1.0 - np.clip(1.3 * layer, 0.0, 1.0)  # x1.3 then clip: flat-topped flakes
    color = np.clip(rng.uniform(0.9, 1.0) + np.array([0.0, 0.0, 0.02]), 0.0, 1.0).astype(np.float32)
    t, airlight = _veil(rng, shape, _SNOW_VEIL[severity])
    snowy = clean * keep[:, :, None] + color * (1.0 - keep[:, :, None])
    degraded = snowy * t + airlight * (1.0 - t)
    return degraded, 1.0 - keep * t[:, :, 0], 1.0 - keep


def _haze(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    h, w = clean.shape[:2]
    tilt = rng.uniform(-0.3, 0.3)
    yy = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None]  # top of the frame = far
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    vertical = np.clip(yy + tilt * xx, 0.0, 1.0)
    luminance = clean @ np.array([0.299, 0.587, 0.114], np.float32)
    bright = _smooth(luminance, max(h, w) / 24.0)
    field = _low_frequency(rng, (h, w), cells=int(rng.integers(2, 5)))
    depth = 0.55 * vertical + 0.3 * bright + 0.15 * (0.5 + 0.25 * field)
    depth = (depth - depth.min()) / (depth.max() - depth.min() + 1e-6)
    depth = 0.1 + 0.9 * depth
    beta = _HAZE_BETA[severity] * rng.uniform(0.85, 1.15)
    t = np.exp(-beta * depth).astype(np.float32)
    airlight = np.clip(rng.uniform(0.8, 1.0) + rng.uniform(-0.02, 0.02, 3), 0.0, 1.0).astype(np.float32)
    degraded = clean * t[:, :, None] + airlight * (1.0 - t[:, :, None])
    return degraded, 1.0 - t, np.zeros((h, w), np.float32)


def _raindrop(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    h, w = clean.shape[:2]
    per_image, r_min, r_max = _DROPS[severity]
    area_ratio = (h * w) / (_REFERENCE_SIZE * scale) ** 2
    count = int(rng.poisson(per_image * area_ratio))
    blur = 1.5 * scale + 0.5
    blurred = ndimage.gaussian_filter(clean, (blur, blur, 0), mode="reflect", truncate=3.0)
    out = clean.copy()
    keep = np.ones((h, w), np.float32)
    for _ in range(count):
        radius = max(2.0, (r_min + (r_max - r_min) * rng.uniform() ** 2) * scale)
        aspect = math.sqrt(rng.uniform(0.75, 1.35))
        rx, ry = radius * aspect, radius / aspect
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        a1, a2 = rng.uniform(0, 0.12), rng.uniform(0, 0.08)
        p1, p2 = rng.uniform(0, 2 * math.pi, 2)
        mag = rng.uniform(1.3, 2.5)
        shift_y, shift_x = -rng.uniform(0.0, 1.5) * ry, rng.normal(0.0, 0.3) * rx
        opacity, gain = rng.uniform(0.85, 1.0), rng.uniform(0.9, 1.1)
        rim, highlight = rng.uniform(0.25, 0.55), rng.uniform(0.2, 0.6)
        extent = 1.3 * max(rx, ry)
        y0, y1 = max(0, int(cy - extent)), min(h, int(cy + extent) + 1)
        x0, x1 = max(0, int(cx - extent)), min(w, int(cx + extent) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        uy, ux = (yy - cy) / ry, (xx - cx) / rx
        rad = np.hypot(uy, ux)
        angle = np.arctan2(uy, ux)
        rad = rad * (1.0 + a1 * np.cos(angle - p1) + a2 * np.cos(2 * angle - p2))
        alpha = (opacity * (1.0 - _smoothstep(0.8, 1.0, rad))).astype(np.float32)
        # a drop is a tiny fish-eye lens: inverted, magnified field of view, stronger towards its edge
        bend = mag * (1.0 + 0.35 * rad * rad)
        src_y = cy + shift_y - bend * (yy - cy)
        src_x = cx + shift_x - bend * (xx - cx)
        content = _bilinear_sample(blurred, src_y, src_x) * gain
        content *= (1.0 - rim * np.exp(-(((rad - 0.9) / 0.08) ** 2)))[:, :, None]
        content += (highlight * np.exp(-((ux + 0.35) ** 2 + (uy + 0.4) ** 2) / (2 * 0.12**2)))[:, :, None]
        np.clip(content, 0.0, 1.0, out=content)
        a3 = alpha[:, :, None]
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1.0 - a3) + content * a3
        keep[y0:y1, x0:x1] *= 1.0 - alpha
    return out, 1.0 - keep, 1.0 - keep


_RENDERERS = {"rain": _rain, "snow": _snow, "haze": _haze, "raindrop": _raindrop}


def render_weather(
    clean: np.ndarray,
    weather: str,
    *,
    severity: int = 2,
    seed: int = 0,
    scale: float | None = None,
) -> WeatherSample:
    """Render ``weather`` (one of ``WEATHER_TYPES``) at ``severity`` 1..3 over a clean (H, W, 3) image.

    ``clean`` is float in [0, 1] (uint8 is accepted and divided by 255). ``scale`` multiplies all feature
    sizes (default ``max(H, W) / 512``). Deterministic in (clean, weather, severity, seed, scale).
    """
    if weather not in _RENDERERS:
        raise ValueError(f"unknown weather '{weather}'; expected one of {WEATHER_TYPES}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    image = _as_image(clean)
    if scale is None:
        scale = max(image.shape[:2]) / _REFERENCE_SIZE
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    rng = np.random.default_rng(seed)
    degraded, mask, particles = _RENDERERS[weather](image, rng, int(severity), float(scale))
    degraded = np.clip(degraded, 0.0, 1.0).astype(np.float32)
    mask = np.clip(mask, 0.0, 1.0).astype(np.float32)
    particles = np.clip(particles, 0.0, 1.0).astype(np.float32)
    return WeatherSample(degraded, image, mask, weather, int(severity), particles)
