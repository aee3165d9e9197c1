"""Raindrop (lens drop) renderer families: three generative models besides ``raindrop-classic``.

Every family is an alpha composite ``I = J (1 - a) + C a`` of the clean image J with drop content C;
``mask = particles = a`` (the drop opacity). Sizes are pixels of a 512-pixel image times ``scale``,
counts are per (512 ``scale``)^2 pixels.

* ``raindrop-refract``: drops as a height field: a bounded number of large spherical caps (random
  contact angle 25-70 degrees, wobbly elliptic outline) plus hundreds of tiny drops (truncated
  Gaussian bumps, splatted and blurred, two size classes); merged drops take the max height. Each
  pixel refracts along the surface slope: it shows a defocused background displaced by K * grad(h)
  (K random; small drops show inverted miniatures, large ones a magnified view), darkened by a
  Fresnel-like term growing with the slope and lit by a Phong highlight from one light direction.
* ``raindrop-blur``: out-of-focus drops: soft round blobs (wide smoothstep edge) showing a strongly
  blurred background (blur growing with the drop's size), brightened or dimmed per drop, some with a
  faint bokeh ring; no sharp structure anywhere.
* ``raindrop-spatter``: hundreds to thousands of small irregular splashes (clustered point masses,
  splatted, blurred, thresholded through a noise field) plus a few drops running down the glass: a
  head blob and a wavy, beaded trail above it. Semi-transparent (peak opacity 0.6-0.95), the content
  slightly refracted and darker or lighter than the scene.

PSNR of degraded vs clean (dB), the 8 built-in photos (train, val, test splits; long side 512), seeds
0-2, min / mean / max:

    family             severity 1          severity 2          severity 3
    raindrop-refract   23.2 / 26.8 / 32.7  17.7 / 22.3 / 27.2  14.1 / 18.2 / 24.1
    raindrop-blur      21.2 / 26.1 / 29.2  18.8 / 22.3 / 27.1  15.7 / 18.4 / 21.3
    raindrop-spatter   17.6 / 25.2 / 29.5  18.0 / 21.6 / 26.2  12.2 / 17.5 / 20.2

Spatter varies most between photos: its tone (darker or lighter) matters more on some scenes.
A 1024 x 1024 heavy render takes about 0.35-0.5 s on one CPU core; a 128 x 128 crop 5-12 ms.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..weather import _REFERENCE_SIZE, _bilinear_sample, _smooth, _smoothstep, _splat
from . import register_family

# refract: large caps per image, radius range px; tiny drops per image
_REFRACT = {1: (22, 8.0, 32.0, 400), 2: (45, 9.0, 44.0, 800), 3: (90, 10.0, 52.0, 1400)}
# blur: drops per image, radius range px
_BLUR = {1: (20, 14.0, 48.0), 2: (40, 16.0, 60.0), 3: (85, 18.0, 70.0)}
# spatter: splashes per image, running drops per image
_SPATTER = {1: (1000, 4), 2: (2600, 8), 3: (5500, 13)}


def _count(rng: np.random.Generator, per_image: float, shape: tuple[int, int], scale: float) -> int:
    """A Poisson count of ``per_image`` per (512 scale)^2 pixels over ``shape``."""
    return int(rng.poisson(per_image * shape[0] * shape[1] / (_REFERENCE_SIZE * scale) ** 2))


def _blur_rgb(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel of an (H, W, 3) image (block-averaged for large sigmas)."""
    return np.stack([_smooth(image[:, :, c], sigma) for c in range(3)], axis=2)


def _drop_box(shape: tuple[int, int], cy: float, cx: float, extent: float):
    """The bounding box (y0, y1, x0, x1) of a drop clipped to the image, or None when it is outside."""
    y0, y1 = max(0, int(cy - extent)), min(shape[0], int(cy + extent) + 2)
    x0, x1 = max(0, int(cx - extent)), min(shape[1], int(cx + extent) + 2)
    return (y0, y1, x0, x1) if y0 < y1 and x0 < x1 else None


def _wobbly_radius(rng: np.random.Generator, box, cy: float, cx: float, ry: float, rx: float):
    """Normalised radius (1 = outline) of an ellipse with a random two-harmonic wobble, over ``box``."""
    y0, y1, x0, x1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    uy, ux = (yy - cy) / ry, (xx - cx) / rx
    angle = np.arctan2(uy, ux)
    a1, a2, p1, p2 = rng.uniform(0, 0.1), rng.uniform(0, 0.06), *rng.uniform(0, 2 * math.pi, 2)
    return np.hypot(uy, ux) * (1.0 + a1 * np.cos(angle - p1) + a2 * np.cos(2 * angle - p2))


# ----------------------------------------------------------------------------------------- raindrop-refract
def _cap_heights(rng: np.random.Generator, shape: tuple[int, int], severity: int, scale: float) -> np.ndarray:
    """(H, W) height field (px) of the large drops: spherical caps, max where they overlap."""
    per_image, r_min, r_max, _ = _REFRACT[severity]
    height = np.zeros(shape, np.float32)
    for _ in range(_count(rng, per_image, shape, scale)):
        radius = max(2.0, (r_min + (r_max - r_min) * rng.uniform() ** 2) * scale)
        aspect = math.sqrt(rng.uniform(0.7, 1.4))
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        contact = math.radians(rng.uniform(25.0, 70.0))
        box = _drop_box(shape, cy, cx, 1.2 * radius * max(aspect, 1 / aspect))
        if box is None:
            continue
        rho = _wobbly_radius(rng, box, cy, cx, radius / aspect, radius * aspect)
        csc, cot = 1.0 / math.sin(contact), 1.0 / math.tan(contact)
        cap = radius * (np.sqrt(np.maximum(csc * csc - rho * rho, 0.0)) - cot)
        y0, y1, x0, x1 = box
        np.maximum(height[y0:y1, x0:x1], cap, out=height[y0:y1, x0:x1])
    return height


def _tiny_heights(
    rng: np.random.Generator, shape: tuple[int, int], severity: int, scale: float
) -> np.ndarray:
    """(H, W) height field (px) of many tiny drops: splatted Gaussian bumps cut off at 40 % height."""
    height = np.zeros(shape, np.float32)
    count = _count(rng, _REFRACT[severity][3], shape, scale)
    for wanted, share in ((1.2 * scale, 0.7), (2.5 * scale, 0.3)):
        sigma = max(0.7, wanted)  # clamped tiny drops: fewer of them (the same coverage)
        n = int(count * share * (wanted / sigma) ** 2)
        ys, xs = rng.uniform(0, shape[0], n), rng.uniform(0, shape[1], n)
        amp = rng.uniform(0.7, 1.6, n) * 2 * math.pi * sigma * sigma
        bumps = ndimage.gaussian_filter(_splat(shape, ys, xs, amp), sigma, mode="constant", truncate=3.0)
        np.maximum(height, 1.5 * sigma * np.maximum(bumps - 0.4, 0.0), out=height)
    return height


def _shade(slope_y: np.ndarray, slope_x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Fresnel-like darkening and a Phong highlight from the surface slopes (each (N,) arrays)."""
    steep = (slope_y**2 + slope_x**2) / (1.0 + slope_y**2 + slope_x**2)  # sin^2 of the tilt
    dark = rng.uniform(0.3, 0.7) * steep
    azimuth, tilt = rng.uniform(0, 2 * math.pi), rng.uniform(0.3, 0.6)
    light = np.array([math.sin(tilt) * math.sin(azimuth), math.sin(tilt) * math.cos(azimuth), math.cos(tilt)])
    norm = np.sqrt(1.0 + slope_y**2 + slope_x**2)
    cosine = (-slope_y * light[0] - slope_x * light[1] + light[2]) / norm
    shine = rng.uniform(0.2, 0.6) * np.clip(cosine, 0.0, 1.0) ** rng.uniform(40.0, 120.0)
    return dark, shine


@register_family(
    "raindrop-refract", "raindrop", "height-field drops (caps + tiny bumps) refracting a defocused view"
)
def _raindrop_refract(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    shape = clean.shape[:2]
    height = np.maximum(_cap_heights(rng, shape, severity, scale), _tiny_heights(rng, shape, severity, scale))
    alpha = rng.uniform(0.85, 1.0) * _smoothstep(0.0, max(0.3, 0.5 * scale), height)
    background = _blur_rgb(clean, rng.uniform(1.5, 4.0) * scale)
    slope_y, slope_x = np.gradient(height)
    inside = np.nonzero(alpha > 0)
    gain = rng.uniform(0.3, 0.9) * 48.0 * scale  # refraction: background px per unit slope
    sy, sx = slope_y[inside], slope_x[inside]
    content = _bilinear_sample(background, inside[0] + gain * sy, inside[1] + gain * sx)
    dark, shine = _shade(sy, sx, rng)
    content = content * (rng.uniform(0.9, 1.1) * (1.0 - dark))[:, None] + shine[:, None]
    out = clean.copy()
    a = alpha[inside][:, None]
    out[inside] = clean[inside] * (1.0 - a) + np.clip(content, 0.0, 1.0) * a
    return out, alpha, alpha


# ------------------------------------------------------------------------------------------- raindrop-blur
def _blur_drop_maps(rng: np.random.Generator, shape: tuple[int, int], severity: int, scale: float):
    """Opacity ``keep`` = prod(1 - a_i), and alpha-blended per-drop maps: blur mix, gain, lift (H, W)."""
    per_image, r_min, r_max = _BLUR[severity]
    keep = np.ones(shape, np.float32)
    maps = np.zeros((3, *shape), np.float32)  # mix (0 = mildly, 1 = strongly blurred), gain - 1, lift
    for _ in range(_count(rng, per_image, shape, scale)):
        size = rng.uniform() ** 1.5
        radius = max(3.0, (r_min + (r_max - r_min) * size) * scale)
        aspect = math.sqrt(rng.uniform(0.8, 1.25))
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        soft = rng.uniform(0.25, 0.6)
        box = _drop_box(shape, cy, cx, (1.0 + soft) * radius * max(aspect, 1 / aspect))
        if box is None:
            continue
        rho = _wobbly_radius(rng, box, cy, cx, radius / aspect, radius * aspect)
        alpha = rng.uniform(0.7, 1.0) * (1.0 - _smoothstep(1.0 - soft, 1.0 + soft, rho))
        ring = rng.uniform(0.0, 0.08) * np.exp(-(((rho - 0.85) / 0.12) ** 2))
        values = (size, rng.uniform(-0.3, 0.3), rng.uniform(-0.02, 0.12) + ring)
        y0, y1, x0, x1 = box
        for k, value in enumerate(values):
            maps[k, y0:y1, x0:x1] += (value - maps[k, y0:y1, x0:x1]) * alpha
        keep[y0:y1, x0:x1] *= 1.0 - alpha
    return keep, maps


@register_family(
    "raindrop-blur", "raindrop", "out-of-focus lens drops: soft blobs of a strongly blurred background"
)
def _raindrop_blur(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    keep, maps = _blur_drop_maps(rng, clean.shape[:2], severity, scale)
    mix, gain, lift = maps / np.maximum(1.0 - keep, 1e-6)  # alpha-weighted means over the drops
    mild = _blur_rgb(clean, rng.uniform(5.0, 9.0) * scale)
    strong = _blur_rgb(clean, rng.uniform(14.0, 24.0) * scale)
    content = mild + (strong - mild) * mix[:, :, None]
    content = content * (1.0 + gain)[:, :, None] + lift[:, :, None]
    alpha = (1.0 - keep)[:, :, None]
    return clean * (1.0 - alpha) + np.clip(content, 0.0, 1.0) * alpha, 1.0 - keep, 1.0 - keep


# ---------------------------------------------------------------------------------------- raindrop-spatter
def _splashes(rng: np.random.Generator, shape: tuple[int, int], severity: int, scale: float) -> np.ndarray:
    """(H, W) opacity in [0, 1] of small irregular splashes: clustered point masses, blurred, cut
    through a fine noise field so that the outlines are ragged."""
    sigma = max(0.6, 1.6 * scale)  # below 0.6 px: fewer, clamped splashes (the same coverage)
    count = _count(rng, _SPATTER[severity][0] * (1.6 * scale / sigma) ** 2, shape, scale)
    satellites = rng.poisson(1.5, count)
    ys = np.repeat(rng.uniform(0, shape[0], count), satellites + 1)
    xs = np.repeat(rng.uniform(0, shape[1], count), satellites + 1)
    ys = ys + rng.normal(0.0, 4.0 * scale, ys.size) * (rng.uniform(size=ys.size) < 0.8)
    xs = xs + rng.normal(0.0, 4.0 * scale, xs.size) * (rng.uniform(size=xs.size) < 0.8)
    mass = rng.lognormal(0.0, 0.8, ys.size) * 2 * math.pi * sigma * sigma
    field = ndimage.gaussian_filter(_splat(shape, ys, xs, mass), sigma, mode="constant", truncate=3.0)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    field = field * (1.0 + 0.36 * noise / (noise.std() + 1e-6))
    return _smoothstep(0.35, 0.6, field)


def _runs(rng: np.random.Generator, shape: tuple[int, int], severity: int, scale: float) -> np.ndarray:
    """(H, W) opacity of drops running down: a head blob with a wavy, beaded trail above it."""
    count = max(1, _count(rng, _SPATTER[severity][1], shape, scale))
    lengths = rng.uniform(40.0, 200.0, count) * scale
    steps = max(2, math.ceil(lengths.max() / 0.5))
    t = np.linspace(0.0, 1.0, steps)[None, :]
    head_y, head_x = rng.uniform(0, shape[0], count), rng.uniform(0, shape[1], count)
    wave = rng.uniform(2.0, 8.0, count)[:, None] * scale
    phase, turns = rng.uniform(0, 2 * math.pi, count)[:, None], rng.uniform(0.5, 2.5, count)[:, None]
    ys = head_y[:, None] - lengths[:, None] * t
    xs = head_x[:, None] + wave * np.sin(2 * math.pi * turns * t + phase) - wave * np.sin(phase)
    width = max(0.6, rng.uniform(1.2, 2.5) * scale)
    beads = 0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(4, 12, count)[:, None] * t + phase) ** 2
    mass = (lengths[:, None] / steps) * beads * (1.0 - 0.6 * t) * 2.2 * math.sqrt(2 * math.pi) * width
    trail = ndimage.gaussian_filter(_splat(shape, ys.ravel(), xs.ravel(), mass.ravel()), width, truncate=3.0)
    head_sigma = max(1.0, rng.uniform(3.5, 7.0) * scale)
    heads = _splat(shape, head_y, head_x, np.full(count, 2 * math.pi * head_sigma**2))
    heads = ndimage.gaussian_filter(heads, head_sigma, mode="constant", truncate=3.0)
    return np.maximum(_smoothstep(0.25, 0.7, trail), _smoothstep(0.3, 0.55, heads))


@register_family(
    "raindrop-spatter", "raindrop", "many ragged splashes and drops running down with beaded trails"
)
def _raindrop_spatter(clean: np.ndarray, rng: np.random.Generator, severity: int, scale: float):
    shape = clean.shape[:2]
    shape_alpha = np.maximum(_splashes(rng, shape, severity, scale), _runs(rng, shape, severity, scale))
    alpha = rng.uniform(0.6, 0.95) * shape_alpha
    inside = np.nonzero(alpha > 0)
    lens = ndimage.gaussian_filter(shape_alpha, max(0.7, 1.5 * scale), mode="constant")
    slope_y, slope_x = np.gradient(lens)
    push = rng.uniform(3.0, 10.0) * scale  # refraction: px per unit opacity slope
    background = _blur_rgb(clean, max(0.5, 1.0 * scale))
    content = _bilinear_sample(
        background, inside[0] + push * slope_y[inside], inside[1] + push * slope_x[inside]
    )
    dark = rng.uniform() < 0.5  # darker (dirty water) or lighter (scattering) than the scene
    tone, lift = (rng.uniform(0.35, 0.65), 0.0) if dark else (rng.uniform(1.0, 1.3), rng.uniform(0.08, 0.2))
    content = np.clip(content * tone + lift, 0.0, 1.0)
    out = clean.copy()
    a = alpha[inside][:, None]
    out[inside] = clean[inside] * (1.0 - a) + content * a
    return out, alpha, alpha
