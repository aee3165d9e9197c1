"""The weather renderer: determinism, how much each type/severity degrades, and what the mask means."""

from __future__ import annotations

import numpy as np
import pytest

from mofme.data import SEVERITIES, WEATHER_TYPES, builtin_photos, render_weather


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [image for _, image in builtin_photos("test", long_side=128)]


@pytest.mark.parametrize("weather", WEATHER_TYPES)
def test_same_seed_is_bit_identical_and_other_seed_differs(photos, weather):
    image = photos[0]
    a = render_weather(image, weather, severity=2, seed=7)
    b = render_weather(image.copy(), weather, severity=2, seed=7)
    c = render_weather(image, weather, severity=2, seed=8)
    assert np.array_equal(a.degraded, b.degraded) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.degraded, c.degraded)
    assert not np.array_equal(a.mask, c.mask)


@pytest.mark.parametrize("weather", WEATHER_TYPES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_every_type_and_severity_degrades(photos, weather, severity):
    for image in photos:
        sample = render_weather(image, weather, severity=severity, seed=0)
        assert sample.degraded.shape == image.shape and sample.degraded.dtype == np.float32
        assert sample.degraded.min() >= 0.0 and sample.degraded.max() <= 1.0
        assert sample.weather == weather and sample.severity == severity
        assert np.array_equal(sample.clean, image)
        assert 8.0 < _psnr(sample.degraded, image) < 35.0


@pytest.mark.parametrize("weather", WEATHER_TYPES)
def test_heavier_severity_lowers_psnr_on_average(photos, weather):
    mean_psnr = [
        np.mean(
            [
                _psnr(render_weather(p, weather, severity=s, seed=k).degraded, p)
                for p in photos
                for k in (0, 1)
            ]
        )
        for s in SEVERITIES
    ]
    assert mean_psnr[0] > mean_psnr[1] + 1.0 > mean_psnr[2] + 2.0, mean_psnr


@pytest.mark.parametrize("weather", WEATHER_TYPES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_mask_bounds_the_change(photos, weather, severity):
    """degraded = clean * (1 - mask) + (degradation layers) * mask, so |degraded - clean| <= mask."""
    for image in photos:
        sample = render_weather(image, weather, severity=severity, seed=3)
        mask = sample.mask
        assert mask.shape == image.shape[:2] and mask.dtype == np.float32
        assert mask.min() >= 0.0 and mask.max() <= 1.0 and mask.max() > 0.3
        assert np.all(np.abs(sample.degraded - image) <= mask[:, :, None] + 1e-5)


@pytest.mark.parametrize("weather", ["snow", "raindrop"])
def test_mask_marks_where_the_image_changed(photos, weather):
    for image in photos:
        sample = render_weather(image, weather, severity=2, seed=5)
        change = np.abs(sample.degraded - image).mean(axis=2)
        assert np.corrcoef(sample.mask.ravel(), change.ravel())[0, 1] > 0.4
        strong, weak = sample.mask > np.quantile(sample.mask, 0.95), sample.mask <= np.median(sample.mask)
        assert change[strong].mean() > 2 * change[weak].mean()


@pytest.mark.parametrize("weather", ["rain", "snow", "haze"])
def test_mask_is_proportional_to_change_over_a_dark_flat_scene(weather):
    # on photos a bright sky hides white streaks and airlight; over a flat dark scene every layer
    # (streaks, flakes, airlight: all near-white) changes a pixel in proportion to the mask
    flat = np.full((64, 96, 3), 0.2, np.float32)
    sample = render_weather(flat, weather, severity=2, seed=4)
    change = np.abs(sample.degraded - flat).mean(axis=2)
    assert sample.mask.std() > 0.01
    assert np.corrcoef(sample.mask.ravel(), change.ravel())[0, 1] > 0.9


@pytest.mark.parametrize(("weather", "severity"), [("raindrop", 2), ("snow", 1)])
def test_unmasked_pixels_are_untouched(photos, weather, severity):
    sample = render_weather(photos[1], weather, severity=severity, seed=2)
    untouched = sample.mask == 0
    assert 0.05 < untouched.mean() < 0.99
    assert np.array_equal(sample.degraded[untouched], photos[1][untouched])


def test_haze_follows_the_scattering_model(photos):
    """With t = 1 - mask, (I - J t) / (1 - t) is one airlight A in [0.8, 1.0] (+-0.02 tint) everywhere."""
    for seed in (0, 1):
        for image in photos:
            sample = render_weather(image, "haze", severity=3, seed=seed)
            m = sample.mask[:, :, None].astype(np.float64)
            airlight = ((sample.degraded - image * (1 - m)) / m)[sample.mask > 0.2]
            assert airlight.std(axis=0).max() < 1e-3
            assert np.all((airlight.mean(axis=0) > 0.77) & (airlight.mean(axis=0) < 1.0 + 1e-6))
            # depth proxy: the top of the frame is farther (hazier) than the bottom on average
            assert sample.mask[: image.shape[0] // 4].mean() > sample.mask[-image.shape[0] // 4 :].mean()


def test_uint8_input_and_scale(photos):
    image = photos[0]
    as_uint8 = np.round(image * 255).astype(np.uint8)
    a = render_weather(image, "snow", seed=1)
    b = render_weather(as_uint8, "snow", seed=1)
    assert np.array_equal(a.degraded, b.degraded)  # builtin photos lie on the 8-bit grid
    default_scale = max(image.shape[:2]) / 512
    assert np.array_equal(a.degraded, render_weather(image, "snow", seed=1, scale=default_scale).degraded)
    assert not np.array_equal(
        a.degraded, render_weather(image, "snow", seed=1, scale=2 * default_scale).degraded
    )


def test_invalid_arguments(photos):
    with pytest.raises(ValueError, match="weather"):
        render_weather(photos[0], "hail")
    with pytest.raises(ValueError, match="severity"):
        render_weather(photos[0], "rain", severity=4)
    with pytest.raises(ValueError, match="shape"):
        render_weather(photos[0][:, :, 0], "rain")
    with pytest.raises(ValueError, match="scale"):
        render_weather(photos[0], "rain", scale=0.0)


def test_tiny_images_render():
    tiny = np.full((3, 5, 3), 0.3, np.float32)
    for weather in WEATHER_TYPES:
        sample = render_weather(tiny, weather, severity=3, seed=0)
        assert sample.degraded.shape == tiny.shape and np.isfinite(sample.degraded).all()


@pytest.mark.parametrize("weather", WEATHER_TYPES)
def test_particles_are_the_layer_the_veil_is_laid_over(photos, weather):
    """mask = 1 - (1 - particles) * t with t the veil / haze transmission: the particle opacity
    never exceeds the mask, haze has none, raindrops have no veil, and for rain and heavy snow the
    veil alone (particles = 0) still marks the mask."""
    sample = render_weather(photos[0], weather, severity=3, seed=3)
    particles = sample.particles
    assert particles.shape == sample.mask.shape and particles.dtype == np.float32
    assert np.all(particles <= sample.mask + 1e-6)
    if weather == "haze":
        assert not particles.any()
    elif weather == "raindrop":
        np.testing.assert_allclose(particles, sample.mask, atol=1e-6)
    else:
        veil_only = particles == 0
        assert veil_only.any() and np.all(sample.mask[veil_only] > 0.05)
        assert (particles > 0.5).any()
