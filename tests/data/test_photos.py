"""Folders of clean photos with weather rendered on the fly, mixed by weight (data.type: folder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mofme.data.photos as photos
from mofme.data import BUILTIN_SPLITS, write_image
from mofme.data.photos import RenderedWeatherDataset, folder_photos
from mofme.train.config import ConfigError, load_config
from mofme.train.data import build_datasets


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = np.stack([y, x, 0.5 * (x + y)], axis=-1) + 0.1 * rng.random((height, width, 3))
    return np.clip(base, 0, 1).astype(np.float32)


@pytest.fixture
def folder(tmp_path):
    """Three photos in nested folders, PNG and JPEG, long sides 120, 90 and 40."""
    write_image(tmp_path / "a.png", _photo(80, 120, 0))
    write_image(tmp_path / "sub" / "b.jpg", _photo(90, 60, 1))
    write_image(tmp_path / "sub" / "deeper" / "c.png", _photo(40, 30, 2))
    (tmp_path / "notes.txt").write_text("not a photo")
    return tmp_path


def test_folder_photos_sizes_and_weather_scales(folder):
    sources = {s.name: s for s in folder_photos(folder, long_sides=(32, 64, 100))}
    assert sorted(sources) == ["a", "sub/b", "sub/deeper/c"]
    assert [max(v.shape[:2]) for v in sources["a"].versions] == [32, 64, 100]
    assert [max(v.shape[:2]) for v in sources["sub/b"].versions] == [32, 64]  # 100 > its native 90
    assert sources["a"].weather_scales == (32 / 512, 64 / 512, 100 / 512)
    assert [v.shape[:2] for v in sources["sub/deeper/c"].versions] == [(32, 24)]
    only_native = folder_photos(folder, long_sides=(500,))
    assert [max(s.versions[0].shape[:2]) for s in only_native] == [120, 90, 40]
    for source in only_native:
        assert not source.versions[0].flags.writeable and source.versions[0].dtype == np.float32


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_photos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no image"):
        folder_photos(tmp_path / "empty")


def test_items_are_deterministic_and_render_at_the_version_scale(folder, monkeypatch):
    sources = folder_photos(folder, long_sides=(64, 100))
    kwargs = dict(crop_size=48, samples_per_epoch=24, seed=3, color_jitter=True)
    a, b = RenderedWeatherDataset([sources], **kwargs), RenderedWeatherDataset([sources], **kwargs)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x["name"] == y["name"] and torch.equal(x["input"], y["input"])
        assert x["input"].shape == (3, 48, 48) and x["mask"].shape == (1, 48, 48)
    a.set_epoch(1)
    assert not all(torch.equal(a[i]["input"], b[i]["input"]) for i in range(len(a)))
    scales = []
    real = photos.render_weather
    monkeypatch.setattr(
        photos, "render_weather", lambda *args, **kw: scales.append(kw["scale"]) or real(*args, **kw)
    )
    for i in range(len(a)):
        a[i]
    assert set(scales) == {64 / 512, 100 / 512, 40 / 512}  # c (long side 40) only at its native size


def test_group_weights_and_clean_fraction(folder):
    first = folder_photos(folder, long_sides=(64,))[:1]
    second = folder_photos(folder, long_sides=(64,))[1:]
    dataset = RenderedWeatherDataset(
        [first, second], weights=(9.0, 1.0), crop_size=16, samples_per_epoch=400, clean_fraction=0.25
    )
    items = [dataset[i] for i in range(len(dataset))]
    share = np.mean([item["name"].startswith("a_") for item in items])
    assert 0.84 < share < 0.95  # 0.9 expected; 400 draws give a standard error of 0.015
    clean = [item for item in items if item["weather"] == -1]
    assert 0.18 < len(clean) / len(items) < 0.32
    assert all(torch.equal(item["input"], item["target"]) and item["mask"].sum() == 0 for item in clean)
    rendered = [(item["input"] - item["target"]).abs().mean() > 0 for item in items if item["weather"] >= 0]
    assert np.mean(rendered) > 0.8  # a 16-pixel crop can miss every drop or flake of a light render
    with pytest.raises(ValueError, match="positive"):
        RenderedWeatherDataset([first], weights=(0.0,))


def test_folder_recipe_mixes_the_builtin_photos(folder, tmp_path):
    config = load_config(
        None,
        [
            "data.type=folder",
            f"data.folders=[{{path: {folder}, weight: 1}}]",
            "data.builtin_weight=1",
            "data.long_sides=[64]",
            "data.crop_size=32",
            "data.samples_per_epoch=60",
        ],
    )
    train, val = build_datasets(config.data, seed=0)
    names = {train[i]["name"].split("_")[0] for i in range(len(train))}
    assert names & set(BUILTIN_SPLITS["train"]) and names & {"a", "sub/b", "sub/deeper/c"}
    assert not names & (set(BUILTIN_SPLITS["test"]) | set(BUILTIN_SPLITS["val"]))
    assert {val[i]["name"].split("_")[0] for i in range(len(val))} == set(BUILTIN_SPLITS["val"])
    missing = load_config(None, ["data.type=folder", f"data.folders=[{{path: {tmp_path / 'nope'}}}]"])
    with pytest.raises(ConfigError, match=r"data.folders\[0\].*nope does not exist"):
        build_datasets(missing.data, seed=0)
    with pytest.raises(ConfigError, match=r"data\.folders must name"):
        build_datasets(load_config(None, ["data.type=folder"]).data, seed=0)


def test_items_carry_the_renderer_particles():
    clean = _photo(40, 40, 5)
    for weather in ("raindrop", "haze"):
        sample = photos.render_weather(clean, weather, severity=3, seed=2)
        item = photos.weather_item(sample, "x")
        assert item["particles"].shape == (1, 40, 40)
        np.testing.assert_array_equal(item["particles"][0].numpy(), sample.particles)
        assert (float(item["particles"].max()) > 0) == (weather == "raindrop")  # haze has no particles
    unknown = photos.weather_item(sample._replace(particles=None), "x")
    assert float(unknown["particles"].abs().sum()) == 0


def test_families_draw_only_the_given_renderers(folder, monkeypatch):
    """With ``families`` every weather draws one of its listed families (the rest never run);
    without, the classic renderer (the items of earlier recipes are unchanged)."""
    drawn = []
    real = photos.render_family
    monkeypatch.setattr(photos, "render_family", lambda *a, **k: drawn.append(a[1]) or real(*a, **k))
    sources = [folder_photos(folder, long_sides=(64,))]
    families = ["rain-classic", "snow-classic", "haze-classic"]
    data = RenderedWeatherDataset(
        sources, crop_size=24, samples_per_epoch=24, weathers=("rain", "snow", "haze"), families=families
    )
    items = [data[i] for i in range(len(data))]
    assert set(drawn) == set(families) and len(drawn) == 24
    again = RenderedWeatherDataset(
        sources, crop_size=24, samples_per_epoch=24, weathers=("rain", "snow", "haze"), families=families
    )
    assert all(torch.equal(a["input"], again[i]["input"]) for i, a in enumerate(items))
    drawn.clear()
    classic = RenderedWeatherDataset(sources, crop_size=24, samples_per_epoch=8, weathers=("rain",))
    assert [classic[i]["name"] for i in range(8)] and drawn == []
    with pytest.raises(ValueError, match=r"no renderer family given for weather \['haze'\]"):
        RenderedWeatherDataset(sources, weathers=("rain", "haze"), families=["rain-classic"])
    with pytest.raises(ValueError, match="unknown renderer families"):
        RenderedWeatherDataset(sources, weathers=("rain",), families=["rain-nope"])


def test_family_renders_and_clean_items():
    image = _photo(48, 64, 3)
    items = photos.family_renders([("p", image)], ["rain-classic", "haze-classic"], severities=(1, 3), seed=2)
    assert [i["weather"] for i in items] == ["rain-classic"] * 2 + ["haze-classic"] * 2
    again = photos.family_renders([("p", image)], ["haze-classic"], severities=(1, 3), seed=2)
    assert torch.equal(items[2]["input"], again[0]["input"])  # a family's renders do not depend on the others
    assert not torch.equal(items[0]["input"], items[1]["input"])
    (clean,) = photos.clean_items([("q", image)])
    assert clean["weather"] == "clean" and torch.equal(clean["input"], clean["target"])


def test_held_out_families_validate_and_never_train(folder, tmp_path):
    config = tmp_path / "held_out.yaml"
    config.write_text(
        f"data:\n  type: folder\n  folders: [{{path: {folder}}}]\n  weathers: [rain, haze]\n"
        f"  families: [rain-classic, haze-classic]\n  val_families: [rain-classic]\n"
    )
    with pytest.raises(ConfigError, match=r"\['rain-classic'\] are also in data.families"):
        load_config(config)
    with pytest.raises(ConfigError, match=r"needs data\.val_folders"):
        load_config(
            config, ["data.families=[haze-classic, rain-classic]", "data.val_families=[snow-classic]"]
        )
    cfg = load_config(
        config,
        [
            "data.families=[haze-classic]",
            "data.weathers=[haze]",
            "data.val_families=[rain-classic]",
            f"data.val_folders=[{folder}]",
            "data.val_long_side=32",
            f"data.clean_folder={folder}",
            "data.clean_long_side=40",
        ],
    )
    _, val = build_datasets(cfg.data, seed=0)
    groups = [item["weather"] for item in val]
    assert groups == ["rain-classic"] * 9 + ["clean"] * 3  # 3 photos x 3 severities, 3 clean photos
    assert max(val[0]["input"].shape[1:]) == 32 and max(val[-1]["input"].shape[1:]) <= 40
    # the renders follow the training seed unless data.val_seed fixes them (runs compared on one set)
    other_seed = build_datasets(cfg.data, seed=1)[1]
    assert not torch.equal(val[0]["input"], other_seed[0]["input"])
    fixed = cfg.data.model_copy(update={"val_seed": 0})
    torch.testing.assert_close(build_datasets(fixed, seed=1)[1][0]["input"], val[0]["input"], rtol=0, atol=0)
