"""Family-specific properties of the rain and snow renderer families (mofme/data/families/rain.py,
snow.py): streak orientation, depth ordering, fog, flake sizes and the ``scale`` argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from mofme.data.families import FAMILIES, families_of, render_family
from mofme.data.families._common import _directional_blur
from mofme.data.families.rain import _noise_streaks

NEW = [n for w in ("rain", "snow") for n in families_of(w) if not n.endswith("-classic")]


def _flat(h: int, w: int, value: float = 0.3) -> np.ndarray:
    image = np.full((h, w, 3), value, np.float32)
    image.flags.writeable = False  # a family must not write into the clean image
    return image


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).random((h, w, 3))
    return np.clip(0.5 + 2.0 * (ndimage.gaussian_filter(noise, (1.5, 1.5, 0)) - 0.5), 0, 1).astype(np.float32)


def _orientation(p: np.ndarray) -> tuple[float, float]:
    """Dominant line direction (radians from vertical, towards +x, mod pi) and coherence in [0, 1]."""
    gy, gx = np.gradient(ndimage.gaussian_filter(p.astype(np.float64), 1.5))  # smoothed: no aliasing bias
    tensor = np.array([[np.sum(gy * gy), np.sum(gy * gx)], [np.sum(gy * gx), np.sum(gx * gx)]])
    values, vectors = np.linalg.eigh(tensor)  # the smallest eigenvector runs along the lines
    dy, dx = vectors[:, 0]
    return math.atan2(dx, dy) % math.pi, (values[1] - values[0]) / (values[1] + values[0])


def _blob_areas(p: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    labels, count = ndimage.label(p > threshold)
    return np.bincount(labels.ravel())[1:] if count else np.zeros(0, np.intp)


def _correlation_area(p: np.ndarray) -> float:
    """Pixels where the autocorrelation of ``p`` exceeds half its peak: the area of a typical feature."""
    spectrum = np.abs(np.fft.rfft2(p - p.mean())) ** 2
    correlation = np.fft.irfft2(spectrum, s=p.shape)
    return float(np.sum(correlation > 0.5 * correlation[0, 0]))


def test_new_families_are_registered():
    assert {"rain-noise", "rain-perspective", "rain-fog", "rain-sheets"} <= set(families_of("rain"))
    assert {"snow-particles", "snow-bokeh", "snow-masks", "snow-blizzard"} <= set(families_of("snow"))
    assert all(FAMILIES[n].description for n in NEW)


@pytest.mark.parametrize("family", NEW)
@pytest.mark.parametrize("shape", [(16, 16), (17, 40), (97, 23)])
def test_small_and_odd_shapes(family, shape):
    clean = _flat(*shape)
    sample = render_family(clean, family, severity=3, seed=0, scale=0.3)
    assert sample.degraded.shape == (*shape, 3) and np.isfinite(sample.degraded).all()
    assert (sample.mask >= sample.particles - 1e-5).all()


@pytest.mark.parametrize("degrees", [-30.0, 0.0, 25.0])
def test_noise_streaks_follow_the_angle(degrees):
    rng = np.random.default_rng(0)
    layer = _noise_streaks(rng, (128, 128), math.radians(degrees), 1.5, 30.0, 60.0, box=True)
    angle, coherence = _orientation(layer)
    error = abs((angle - math.radians(degrees) + math.pi / 2) % math.pi - math.pi / 2)
    assert error < math.radians(3.0) and coherence > 0.6, (math.degrees(angle), coherence)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rain_noise_has_one_dominant_direction(seed):
    sample = render_family(_flat(128, 128), "rain-noise", severity=2, seed=seed, scale=0.5)
    assert _orientation(sample.particles)[1] > 0.6


def test_rain_perspective_near_streaks_are_lower_bigger_and_sparser():
    top, bottom = [], []
    for seed in range(3):
        p = render_family(_flat(192, 192), "rain-perspective", severity=1, seed=seed, scale=1.0).particles
        top.append(_blob_areas(p[:64]))
        bottom.append(_blob_areas(p[-64:]))
    top, bottom = np.concatenate(top), np.concatenate(bottom)
    assert bottom.mean() > 2.0 * top.mean(), (bottom.mean(), top.mean())
    assert top.size > bottom.size  # far drops: many small ones, seen only where the scene is far


def test_rain_fog_mask_holds_a_veil_and_far_is_brighter_and_flatter():
    clean = _texture(128, 128)
    sample = render_family(clean, "rain-fog", severity=3, seed=0, scale=0.5)
    assert (sample.mask - sample.particles).mean() > 0.1
    far, near = slice(0, 32), slice(-32, None)
    assert sample.degraded[far].mean() > sample.degraded[near].mean() + 0.02
    contrast = [sample.degraded[r].std() / clean[r].std() for r in (far, near)]
    assert contrast[0] < 0.85 * contrast[1], contrast


def test_snow_bokeh_flakes_are_much_larger_than_particles():
    largest = {}
    for family in ("snow-bokeh", "snow-particles"):
        areas = [
            _blob_areas(render_family(_flat(160, 160), family, severity=2, seed=s).particles, 0.05)
            for s in (0, 1)
        ]
        largest[family] = np.sort(np.concatenate(areas))[-5:].mean()
    assert largest["snow-bokeh"] > 4 * largest["snow-particles"], largest


@pytest.mark.parametrize(
    "family", ["snow-particles", "snow-masks", "snow-blizzard", "rain-noise", "rain-sheets"]
)
def test_scale_scales_feature_size(family):
    sizes = []
    for scale in (1.0, 2.0):
        renders = [render_family(_flat(160, 160), family, severity=1, seed=s, scale=scale) for s in range(3)]
        sizes.append(np.mean([_correlation_area(r.particles) for r in renders]))
    assert sizes[1] > 2.0 * sizes[0], sizes  # ideally x4 (area), less where features hit the border


def test_rain_streaks_show_the_background_sometimes():
    """In some renders the streak colour follows the background: the same streak pixel is darker over a
    dark photo than over a bright one by more than the opacity explains."""
    gaps = []
    for seed in range(8):
        dark = render_family(_flat(64, 64, 0.05), "rain-noise", severity=3, seed=seed, scale=0.5)
        bright = render_family(_flat(64, 64, 0.6), "rain-noise", severity=3, seed=seed, scale=0.5)
        solid = dark.particles > 0.3
        colour_dark = (dark.degraded[solid] - 0.05 * (1 - dark.particles[solid, None])) / dark.particles[
            solid, None
        ]
        colour_bright = (
            bright.degraded[solid] - 0.6 * (1 - bright.particles[solid, None])
        ) / bright.particles[solid, None]
        gaps.append(float(np.mean(colour_bright - colour_dark)))
    assert min(gaps) < 0.05 and max(gaps) > 0.3, gaps


def test_directional_blur_keeps_mass_and_spreads_along_the_angle():
    image = np.zeros((64, 64), np.float32)
    image[32, 32] = 1.0
    blurred = _directional_blur(image, math.radians(90.0), 21.0)
    assert abs(blurred.sum() - 1.0) < 0.05
    ys, xs = np.nonzero(blurred > 1e-3)
    assert xs.max() - xs.min() >= 18 and ys.max() - ys.min() <= 2
