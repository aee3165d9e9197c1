"""The built-in recognition tasks: disjoint scene bands, fixed test lists, and labels from the renderer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mofme.data import BUILTIN_SPLITS, WEATHER_TYPES, builtin_photos, render_weather
from mofme.data.builtin import _photo
from mofme.data.builtin_tasks import (
    DEGRADATION_CLASSES,
    DEGRADATION_THRESHOLDS,
    SCENE_CLASSES,
    SCENE_LONG_SIDE,
    SCENE_SHARES,
    DegradationDataset,
    SceneDataset,
    degradation_labels,
    scene_crop_positions,
    scene_regions,
)


def _positions(crop: np.ndarray, photo: np.ndarray) -> list[tuple[int, int]]:
    """Every (y, x) where ``crop`` (h, w, 3) occurs pixel for pixel in ``photo``."""
    h, w = crop.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(photo, (h, w, 3))[:, :, 0]
    return [tuple(p) for p in np.argwhere(np.all(windows == crop, axis=(2, 3, 4)))]


def _split_of_crop(crop: np.ndarray, name: str) -> set[int]:
    """The splits of the pixels under ``crop``, wherever it occurs in the photo (asserting it does)."""
    regions, photo = scene_regions(name), _photo(name, SCENE_LONG_SIDE)
    found = _positions(crop, photo)
    assert found, "the crop is not a window of its photo"
    h, w = crop.shape[:2]
    return {int(v) for y, x in found for v in np.unique(regions[y : y + h, x : x + w])}


def test_scene_regions_give_every_split_its_share_of_each_photo():
    for name in SCENE_CLASSES:
        regions = scene_regions(name)
        assert regions.shape == _photo(name, SCENE_LONG_SIDE).shape[:2]
        shares = np.bincount(regions.ravel(), minlength=3) / regions.size
        assert shares[2] == pytest.approx(SCENE_SHARES["test"], abs=0.1)
        assert shares[1] == pytest.approx(SCENE_SHARES["val"], abs=0.1)
        for split in ("train", "val", "test"):  # a crop fits in every split, and only inside it
            positions = scene_crop_positions(name, split, 64)
            assert len(positions) > 0
            y, x = positions[len(positions) // 2]
            assert np.all(regions[y : y + 64, x : x + 64] == ("train", "val", "test").index(split))
        assert np.array_equal(regions, scene_regions(name))  # fixed, not drawn anew


@pytest.fixture(scope="module")
def scene_test() -> SceneDataset:
    return SceneDataset("test", crops_per_class=2)


def test_scene_test_crops_come_from_the_test_region_only(scene_test):
    for item in scene_test._fixed[:: len(WEATHER_TYPES) * 3 + 1]:  # the clean condition of each crop
        assert item["weather"] == -1
        crop = item["clean"].permute(1, 2, 0).numpy()
        assert _split_of_crop(crop, SCENE_CLASSES[item["label"]]) == {2}


def test_scene_test_list_holds_every_condition_of_every_crop(scene_test):
    conditions = {(item["weather"], item["severity"]) for item in scene_test}
    assert conditions == {(-1, 0)} | {(w, s) for w in range(len(WEATHER_TYPES)) for s in (1, 2, 3)}
    assert len(scene_test) == len(SCENE_CLASSES) * 2 * len(conditions)
    counts = np.bincount([item["label"] for item in scene_test], minlength=len(SCENE_CLASSES))
    assert np.all(counts == 2 * len(conditions))
    changed = {True: [], False: []}  # weather changes the image (a light-raindrop crop may catch no drop)
    for item in scene_test:
        changed[item["weather"] >= 0].append(not torch.equal(item["image"], item["clean"]))
    assert not any(changed[False]) and np.mean(changed[True]) > 0.9
    again = SceneDataset("test", crops_per_class=2)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(scene_test, again, strict=True))


def test_scene_train_items_are_crops_of_train_bands_and_depend_on_seed_epoch_index():
    data = SceneDataset("train", samples_per_epoch=16, clean_fraction=0.5)
    first = [data[i] for i in range(16)]
    assert torch.equal(first[3]["image"], data[3]["image"])
    data.set_epoch(1)
    assert not torch.equal(first[3]["image"], data[3]["image"])
    clean_items = [item for item in first if item["weather"] == -1]
    assert clean_items and len(clean_items) < len(first)
    for item in clean_items:  # up to the flip / rotation, a clean train crop lies in train cells only
        crop = item["clean"].permute(1, 2, 0).numpy()
        name = SCENE_CLASSES[item["label"]]
        variants = [np.ascontiguousarray(np.rot90(c, k)) for c in (crop, crop[:, ::-1]) for k in range(4)]
        photo = _photo(name, SCENE_LONG_SIDE)
        upright = next(v for v in variants if _positions(v, photo))
        assert _split_of_crop(upright, name) == {0}


def test_scene_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        SceneDataset("holdout")
    with pytest.raises(ValueError, match="samples_per_epoch"):
        SceneDataset("val", samples_per_epoch=8)
    with pytest.raises(ValueError, match="fits in no val region"):
        SceneDataset("val", crop_size=200)


@pytest.mark.parametrize("weather", WEATHER_TYPES)
def test_degradation_labels_follow_the_renderer_masks(weather):
    photo = builtin_photos("val", long_side=128)[0][1]
    sample = render_weather(photo, weather, severity=3, seed=5)
    labels = degradation_labels(sample)
    index = DEGRADATION_CLASSES.index(weather)
    assert set(np.unique(labels)) <= {0, index}
    if weather == "haze":
        expected = sample.mask >= DEGRADATION_THRESHOLDS["haze"]
    else:
        expected = sample.particles >= DEGRADATION_THRESHOLDS["particles"]
        if weather != "raindrop":  # the veil alone marks the mask but not the labels
            veiled = (sample.mask >= DEGRADATION_THRESHOLDS["particles"]) & ~expected
            assert veiled.any() and np.all(labels[veiled] == 0)
    np.testing.assert_array_equal(labels == index, expected)
    assert 0 < expected.mean() < 1


def test_degradation_train_items_hold_one_weather_and_its_labels():
    data = DegradationDataset("train", samples_per_epoch=24, clean_fraction=0.2)
    seen = set()
    for item in data:
        assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (64, 64)
        assert item["mask"].dtype == torch.int64
        classes = set(item["mask"].unique().tolist())
        allowed = (
            {0} if item["weather"] < 0 else {0, DEGRADATION_CLASSES.index(WEATHER_TYPES[item["weather"]])}
        )
        assert classes <= allowed
        seen.add(item["weather"])
    assert len(seen) >= 3


def test_degradation_eval_split_is_the_whole_test_photos_under_every_condition():
    data = DegradationDataset("test", renders=2, weathers=("rain", "haze"), severities=(3,))
    names = BUILTIN_SPLITS["test"]
    assert len(data) == len(names) * (1 + 2 * 2)  # clean once, each weather x severity twice
    shapes = {item["name"].split("_")[0]: item["image"].shape for item in data}
    for name in names:
        assert shapes[name][1:] == _photo(name, 512).shape[:2]
    renders = [item for item in data if item["name"].startswith(f"{names[0]}_rain_s3")]
    assert len(renders) == 2 and not torch.equal(renders[0]["image"], renders[1]["image"])


def test_clean_fraction_one_trains_on_clean_crops_only():
    data = SceneDataset("train", samples_per_epoch=12, clean_fraction=1.0)
    assert all(item["weather"] == -1 and torch.equal(item["image"], item["clean"]) for item in data)
    with pytest.raises(ValueError, match="clean_fraction"):
        SceneDataset("train", clean_fraction=1.5)
