"""The built-in benchmark (fixed photo split, rendered datasets) and synthesize_dataset round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mofme.data import (
    BUILTIN_SPLITS,
    SEVERITIES,
    WEATHER_TYPES,
    BuiltinWeatherDataset,
    builtin_photos,
    read_image,
    read_pair_list,
    synthesize_dataset,
    write_image,
)
from mofme.data.transforms import jitter_colors


def test_split_is_fixed_and_disjoint():
    names = {split: set(BUILTIN_SPLITS[split]) for split in ("train", "val", "test")}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    assert not (names["val"] & names["test"])
    assert all(names.values())
    photos = {split: builtin_photos(split, long_side=32) for split in names}
    assert [n for n, _ in photos["test"]] == list(BUILTIN_SPLITS["test"])
    digests = {split: {image.tobytes() for _, image in items} for split, items in photos.items()}
    assert not (digests["train"] & digests["test"]) and not (digests["train"] & digests["val"])
    assert len(builtin_photos("all", long_side=32)) == sum(len(v) for v in names.values())
    with pytest.raises(ValueError, match="split"):
        builtin_photos("holdout")


def test_photos_are_cached_read_only_and_on_the_8bit_grid():
    (_, image), *_ = builtin_photos("test")
    assert max(image.shape[:2]) == 256 and image.shape[2] == 3 and image.dtype == np.float32
    assert not image.flags.writeable
    assert builtin_photos("test")[0][1] is image
    np.testing.assert_allclose(image * 255, np.round(image * 255), atol=1e-4)
    assert 0.05 < image.mean() < 0.95 and image.std() > 0.05  # a real photo, not a blank


def test_eval_splits_are_fixed_lists():
    a, b = BuiltinWeatherDataset("test", long_side=48), BuiltinWeatherDataset("test", long_side=48)
    assert len(a) == len(BUILTIN_SPLITS["test"]) * len(WEATHER_TYPES) * len(SEVERITIES) * 4
    names = [a[i]["name"] for i in range(len(a))]
    assert len(set(names)) == len(names)
    assert sorted({a[i]["weather"] for i in range(len(a))}) == list(range(len(WEATHER_TYPES)))
    assert sorted({a[i]["severity"] for i in range(len(a))}) == list(SEVERITIES)
    renders = [a[i]["input"] for i in range(len(a)) if a[i]["name"].startswith("rocket_rain_s2_r")]
    assert len(renders) == 4 and not any(torch.equal(renders[0], r) for r in renders[1:])
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert torch.equal(x["input"], y["input"]) and torch.equal(x["mask"], y["mask"])
        assert x["input"].shape == x["target"].shape
        assert x["mask"].shape == (1, *x["input"].shape[1:])
        assert (x["input"] - x["target"]).abs().mean() > 0.003  # light raindrops on a 48-pixel photo: 0.0075
    a.set_epoch(5)
    assert torch.equal(a[0]["input"], b[0]["input"])
    a[0]["input"].zero_()  # items are copies: the fixed list cannot be corrupted
    assert torch.equal(a[0]["input"], b[0]["input"])
    val = BuiltinWeatherDataset("val", weathers=("haze",), severities=(3,))
    assert len(val) == len(BUILTIN_SPLITS["val"]) and val[0]["severity"] == 3
    assert not set(BUILTIN_SPLITS["train"]) & {val[i]["name"].split("_")[0] for i in range(len(val))}


def test_train_split_is_deterministic_per_seed_epoch_index():
    a = BuiltinWeatherDataset("train", crop_size=32, samples_per_epoch=12, seed=1)
    b = BuiltinWeatherDataset("train", crop_size=32, samples_per_epoch=12, seed=1)
    assert len(a) == 12
    first = [a[i] for i in range(len(a))]
    for i, item in enumerate(first):
        assert torch.equal(item["input"], b[i]["input"]) and item["name"] == b[i]["name"]
        assert item["input"].shape == item["target"].shape == (3, 32, 32)
        assert item["mask"].shape == (1, 32, 32) and item["severity"] in (1, 2, 3)
        assert item["name"].split("_")[0] in BUILTIN_SPLITS["train"]
        assert item["input"].min() >= 0 and item["input"].max() <= 1
    assert len({it["weather"] for it in first}) > 1 and len({it["severity"] for it in first}) > 1
    a.set_epoch(1)
    assert any(not torch.equal(a[i]["input"], first[i]["input"]) for i in range(len(a)))
    other = BuiltinWeatherDataset("train", crop_size=32, samples_per_epoch=12, seed=2)
    assert any(not torch.equal(other[i]["input"], first[i]["input"]) for i in range(len(a)))
    with pytest.raises(IndexError):
        a[12]


def test_train_options_and_errors():
    only = BuiltinWeatherDataset(
        "train", crop_size=300, samples_per_epoch=3, weathers=("snow",), severities=(3,)
    )
    item = only[0]
    assert item["weather"] == WEATHER_TYPES.index("snow") and item["severity"] == 3
    assert item["input"].shape == (3, 300, 300)  # larger than the photos: mirror-padded
    with pytest.raises(ValueError):
        BuiltinWeatherDataset("train", weathers=("hail",))
    with pytest.raises(ValueError):
        BuiltinWeatherDataset("test", samples_per_epoch=10)
    with pytest.raises(ValueError):
        BuiltinWeatherDataset("holdout")


def test_zoom_changes_content_scale_not_weather_scale():
    kwargs = dict(crop_size=48, samples_per_epoch=6, weathers=("rain",), seed=3)
    plain = BuiltinWeatherDataset("train", **kwargs)
    zoomed = BuiltinWeatherDataset("train", zoom=(2.0,), **kwargs)
    for source in zoomed._sources:  # twice the long side, or the native photo if that is smaller
        (photo,) = source.versions
        assert max(photo.shape[:2]) == 512 or max(photo.shape[:2]) < 512
        assert max(photo.shape[:2]) > 256
    for i in range(len(plain)):
        a, b = plain[i], zoomed[i]
        assert not torch.equal(a["target"], b["target"])  # other content
        assert torch.equal(a["mask"], b["mask"])  # the same streaks, at the same scale
    mixed = BuiltinWeatherDataset("train", zoom=(0.75, 1.0, 1.5), **kwargs)
    assert [len(s.versions) for s in mixed._sources] == [3] * len(BUILTIN_SPLITS["train"])
    with pytest.raises(ValueError, match="zoom"):
        BuiltinWeatherDataset("train", zoom=(0.0,))
    with pytest.raises(ValueError, match="train split"):
        BuiltinWeatherDataset("val", zoom=(2.0,))


def test_clean_fraction_and_color_jitter():
    ds = BuiltinWeatherDataset(
        "train", crop_size=16, samples_per_epoch=400, clean_fraction=0.25, color_jitter=True
    )
    items = [ds[i] for i in range(len(ds))]
    clean = [it for it in items if it["weather"] == -1]
    assert 60 <= len(clean) <= 140  # Binomial(400, 0.25): mean 100, sd 8.7
    for it in clean:
        assert torch.equal(it["input"], it["target"]) and not it["mask"].any() and "_clean_" in it["name"]
    again = BuiltinWeatherDataset(
        "train", crop_size=16, samples_per_epoch=400, clean_fraction=0.25, color_jitter=True
    )
    assert all(torch.equal(again[i]["input"], items[i]["input"]) for i in range(0, 400, 37))
    with pytest.raises(ValueError, match="clean_fraction"):
        BuiltinWeatherDataset("train", clean_fraction=1.0)
    with pytest.raises(ValueError, match="train split"):
        BuiltinWeatherDataset("test", color_jitter=True)


def test_jitter_colors_keeps_range_and_tone_order():
    rng = np.random.default_rng(0)
    gray = np.repeat(np.linspace(0, 1, 50, dtype=np.float32)[None, :, None], 3, axis=2)
    colour = rng.uniform(size=(8, 8, 3)).astype(np.float32)
    for seed in range(5):
        out = jitter_colors(gray, np.random.default_rng(seed))
        assert out.shape == gray.shape and out.dtype == np.float32
        assert np.all(np.diff(out[0], axis=0) >= 0)  # per channel a monotone tone curve
        assert np.all(np.diff(out[0, :10], axis=0) > 0)  # (strictly, below the clip)
        jittered = jitter_colors(colour, np.random.default_rng(seed))
        assert jittered.min() >= 0 and jittered.max() <= 1
        np.testing.assert_array_equal(jittered, jitter_colors(colour, np.random.default_rng(seed)))
    assert not np.allclose(jitter_colors(colour, np.random.default_rng(0)), colour)


def test_synthesize_builtin_photos_round_trip(tmp_path):
    photos = builtin_photos("test", long_side=48)
    pairs = synthesize_dataset(photos, tmp_path, weathers=("rain", "haze"), severities=(1, 3), seed=0)
    assert len(pairs) == len(photos) * 2 * 2
    assert pairs == read_pair_list(tmp_path / "allweather.txt")
    for weather in ("rain", "haze"):
        listed = read_pair_list(tmp_path / f"{weather}.txt")
        assert len(listed) == len(photos) * 2 and {p.weather for p in listed} == {weather}
    by_name = dict(photos)
    for pair in pairs:
        clean = read_image(pair.target)
        np.testing.assert_allclose(clean, by_name[pair.input.stem.rsplit("_s", 1)[0]], atol=1e-6)
        degraded = read_image(pair.input)
        assert degraded.shape == clean.shape and np.abs(degraded - clean).mean() > 0.01
        mask = read_image(tmp_path / "mask" / pair.input.relative_to(tmp_path / "input"))
        assert mask.shape == clean.shape and mask.max() > 0.1
    again = synthesize_dataset(
        photos, tmp_path / "again", weathers=("rain", "haze"), severities=(1, 3), seed=0
    )
    assert all(a.input.read_bytes() == b.input.read_bytes() for a, b in zip(pairs, again, strict=True))
    other = synthesize_dataset(photos[:1], tmp_path / "other", weathers=("rain",), severities=(1,), seed=1)
    assert other[0].input.read_bytes() != pairs[0].input.read_bytes()


def test_synthesize_from_folder_with_split(tmp_path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "src" / "a.png", rng.random((20, 24, 3)))
    write_image(tmp_path / "src" / "sub" / "a.jpg", rng.random((30, 20, 3)))
    pairs = synthesize_dataset(
        tmp_path / "src", tmp_path / "out", weathers=("snow",), severities=(2,), split="train"
    )
    assert sorted(p.input.name for p in pairs) == ["a_s2.png", "sub__a_s2.png"]
    assert all(p.input.is_relative_to(tmp_path / "out" / "train" / "input" / "snow") for p in pairs)
    assert (tmp_path / "out" / "train" / "synth.json").is_file()
    with pytest.raises(ValueError, match="share names"):
        synthesize_dataset([tmp_path / "src" / "a.png", tmp_path / "src" / "sub" / "a.jpg"], tmp_path / "dup")
    with pytest.raises(ValueError):
        synthesize_dataset(tmp_path / "src", tmp_path / "bad", weathers=("hail",))
