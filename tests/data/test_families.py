"""Every registered renderer family: deterministic per seed, masks that mean what they say, a
degradation that grows with severity; the registry's own checks."""

from __future__ import annotations

import numpy as np
import pytest

from mofme.data import WEATHER_TYPES, builtin_photos
from mofme.data.families import FAMILIES, families_of, register_family, render_family


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-12)))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return builtin_photos("test", long_side=128)[0][1]


@pytest.mark.parametrize("weather", WEATHER_TYPES)
def test_every_weather_has_a_classic_and_three_more_families(weather):
    names = families_of(weather)
    assert f"{weather}-classic" in names
    assert len(names) >= 4, names


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_is_bit_identical_other_seed_differs(photo, family):
    a = render_family(photo, family, severity=2, seed=3)
    b = render_family(photo.copy(), family, severity=2, seed=3)
    c = render_family(photo, family, severity=2, seed=4)
    for name in ("degraded", "mask", "particles"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.degraded, c.degraded)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_masks_are_returned_and_cover_the_change(photo, family):
    sample = render_family(photo, family, severity=3, seed=1)
    assert sample.weather == FAMILIES[family].weather and sample.severity == 3
    assert sample.degraded.shape == photo.shape and sample.mask.shape == photo.shape[:2]
    assert sample.particles.shape == photo.shape[:2]
    for array in (sample.degraded, sample.mask, sample.particles):
        assert array.dtype == np.float32 and array.min() >= 0.0 and array.max() <= 1.0
    change = np.abs(sample.degraded - photo).max(axis=2)
    assert sample.mask.max() > 0.05, "a degraded image with an empty mask"
    # where the mask says the photo is untouched, it is (up to camera effects and rounding)
    untouched = sample.mask < 1e-4
    if untouched.any():
        assert np.percentile(change[untouched], 99) < 0.1
    # the mask bounds the change: degraded = (1 - m) clean + m x (something in [0, 1]), so
    # |degraded - clean| <= m at every pixel (a little slack for rounding and resampling)
    excess = change - sample.mask
    assert np.percentile(excess, 99.9) < 0.02, float(excess.max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_heavier_severity_degrades_more(photo, family):
    psnr = [
        np.mean([_psnr(render_family(photo, family, severity=s, seed=k).degraded, photo) for k in range(3)])
        for s in (1, 2, 3)
    ]
    assert psnr[0] > psnr[2] + 1.0, psnr
    assert psnr[2] > 8.0 and psnr[0] < 40.0, psnr


def test_registry_rejects_bad_names_and_unknown_families(photo):
    with pytest.raises(ValueError, match="starts with 'rain-'"):
        register_family("snowy-rain", "rain", "misnamed")
    with pytest.raises(ValueError, match="unknown weather"):
        register_family("hail-balls", "hail", "no such weather")
    with pytest.raises(ValueError, match="already registered"):
        register_family("rain-classic", "rain", "twice")(lambda *a: a)
    with pytest.raises(ValueError, match="unknown renderer family"):
        render_family(photo, "rain-nope")
