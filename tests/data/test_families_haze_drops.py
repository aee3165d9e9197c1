"""The haze and raindrop renderer families (haze.py, raindrop.py) and camera_effects: each family
draws what its generative model says, unlike the classic renderer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mofme.data import builtin_photos
from mofme.data.families import render_family
from mofme.data.families.camera import camera_effects

SEEDS = range(4)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [image for _, image in builtin_photos("all", long_side=128)]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return dict(builtin_photos("all", long_side=160))["china"]


def _transmission(photo: np.ndarray, family: str, seed: int) -> np.ndarray:
    return 1.0 - render_family(photo, family, severity=2, seed=seed).mask


def test_haze_fractal_is_patchier_than_classic(photo):
    """Relative spatial spread of t (std / mean of the optical depth), after removing the mean row
    profile: classic varies mostly from top to bottom, fractal fog in patches along each row."""

    def patchiness(family: str) -> float:
        values = []
        for seed in SEEDS:
            depth = -np.log(np.clip(_transmission(photo, family, seed), 1e-3, 1.0))
            rows = depth - depth.mean(axis=1, keepdims=True)
            values.append(rows.std() / depth.mean())
        return float(np.mean(values))

    assert patchiness("haze-fractal") > 1.5 * patchiness("haze-classic")


def test_haze_depth_grows_towards_the_horizon(photo):
    """Haze (1 - t) is densest in the top rows (at and above the horizon) and least at the bottom."""
    for seed in SEEDS:
        haze = 1.0 - _transmission(photo, "haze-depth", seed)
        top, bottom = haze[:16].mean(), haze[-16:].mean()
        assert top > 1.5 * bottom, (seed, top, bottom)


def test_haze_night_darkens_while_classic_haze_brightens(photos):
    def mean_shift(family: str) -> float:
        shifts = [
            render_family(p, family, severity=2, seed=s).degraded.mean() - p.mean()
            for p in photos
            for s in (0, 1)
        ]
        return float(np.mean(shifts))

    assert mean_shift("haze-night") < -0.03 < 0.03 < mean_shift("haze-classic")


def _high_frequency(sample) -> float:
    """Mean squared Laplacian of the degraded image's luminance inside the drops (mask > 0.8)."""
    lum = sample.degraded.mean(axis=2)
    lap = ndimage.laplace(lum)
    inside = sample.mask > 0.8
    inside = ndimage.binary_erosion(inside, iterations=2)  # leave the drop outlines out
    return float((lap[inside] ** 2).mean())


def test_raindrop_blur_shows_less_detail_inside_drops_than_classic(photo):
    blur = np.mean(
        [_high_frequency(render_family(photo, "raindrop-blur", severity=3, seed=s)) for s in SEEDS]
    )
    classic = np.mean(
        [_high_frequency(render_family(photo, "raindrop-classic", severity=3, seed=s)) for s in SEEDS]
    )
    assert blur < 0.3 * classic, (blur, classic)


def _components(mask: np.ndarray) -> tuple[int, float]:
    """Number of connected drops (mask > 0.1) and their mean area in pixels."""
    labels, count = ndimage.label(mask > 0.1)
    return count, float((labels > 0).sum() / max(count, 1))


def test_raindrop_spatter_has_many_more_smaller_drops_than_classic(photo):
    spatter = [_components(render_family(photo, "raindrop-spatter", severity=2, seed=s).mask) for s in SEEDS]
    classic = [_components(render_family(photo, "raindrop-classic", severity=2, seed=s).mask) for s in SEEDS]
    assert np.mean([c for c, _ in spatter]) > 4 * np.mean([c for c, _ in classic])
    assert np.mean([a for _, a in spatter]) < 0.5 * np.mean([a for _, a in classic])


def test_raindrop_refract_has_tiny_drops_and_a_refracted_dark_rim(photo):
    sample = render_family(photo, "raindrop-refract", severity=2, seed=0)
    labels, count = ndimage.label(sample.mask > 0.1)
    areas = np.bincount(labels.ravel())[1:]
    assert count >= 20 and (areas <= 12).sum() >= 10, (count, np.sort(areas)[:10])
    assert np.array_equal(sample.mask, sample.particles)


def _thickness(mask: np.ndarray) -> float:
    """Drop area per outline pixel (mask > 0.1): grows linearly with drop size, whatever their number."""
    drops = mask > 0.1
    outline = drops & ~ndimage.binary_erosion(drops)
    return float(drops.sum() / max(outline.sum(), 1))


@pytest.mark.parametrize("family", ["raindrop-refract", "raindrop-blur", "raindrop-spatter"])
def test_scale_scales_the_drops(photo, family):
    def thickness(scale: float) -> float:
        masks = [render_family(photo, family, severity=1, seed=s, scale=scale).mask for s in SEEDS]
        return float(np.mean([_thickness(mask) for mask in masks]))

    assert thickness(0.8) > 1.35 * thickness(0.4)  # x2 in theory; pixel-size clamps and merging blur it


def test_haze_families_draw_no_particles(photo):
    for family in ("haze-depth", "haze-fractal", "haze-night"):
        sample = render_family(photo, family, severity=3, seed=0)
        assert not sample.particles.any() and sample.mask.min() > 0.0


def test_families_run_on_tiny_and_odd_images():
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(16, 37, 3)).astype(np.float32)
    for family in (
        "haze-depth",
        "haze-fractal",
        "haze-night",
        "raindrop-refract",
        "raindrop-blur",
        "raindrop-spatter",
    ):
        for severity in (1, 3):
            sample = render_family(image, family, severity=severity, seed=1, scale=0.3)
            assert sample.degraded.shape == image.shape and np.isfinite(sample.degraded).all()


def test_camera_effects_is_deterministic_and_keeps_shape_dtype_and_range(photo):
    image = photo.copy()
    a = camera_effects(image, np.random.default_rng(5), strength=1.0)
    b = camera_effects(image, np.random.default_rng(5), strength=1.0)
    assert np.array_equal(a, b) and np.array_equal(image, photo)
    assert a.shape == photo.shape and a.dtype == np.float32 and a.min() >= 0.0 and a.max() <= 1.0
    outputs = [camera_effects(image, np.random.default_rng(s), strength=2.0) for s in range(4)]
    assert all(not np.array_equal(o, photo) for o in outputs)
    assert len({o.tobytes() for o in outputs}) == 4


def test_camera_effects_off_at_strength_zero_and_milder_at_low_strength(photo):
    assert np.array_equal(camera_effects(photo, np.random.default_rng(0), strength=0.0), photo)

    def error(strength: float) -> float:
        return np.mean(
            [
                np.abs(camera_effects(photo, np.random.default_rng(s), strength=strength) - photo).mean()
                for s in range(6)
            ]
        )

    assert error(0.3) < error(1.0)
    with pytest.raises(ValueError, match="strength"):
        camera_effects(photo, np.random.default_rng(0), strength=-1.0)


def test_haze_banks_leave_most_of_the_frame_under_the_veil_alone(photo):
    """Optical depth -ln t: its median sits near the thin veil's (the minimum), far below the banks'
    peak; fractal fog, a field at every scale, puts its median much higher in its range."""

    def median_position(family: str) -> float:
        positions = []
        for seed in range(8):
            depth = -np.log(np.clip(_transmission(photo, family, seed), 1e-3, 1.0))
            positions.append((np.median(depth) - depth.min()) / (depth.max() - depth.min()))
        return float(np.mean(positions))

    assert median_position("haze-banks") < 0.15 < median_position("haze-fractal")
