"""The weights shipped inside the package: found by name, built as their recipe says, and restoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mofme.cli
from mofme.cli import main
from mofme.configs import recipe_path
from mofme.data import builtin_photos, read_image, render_weather, write_image
from mofme.data.families import render_family
from mofme.data.transforms import to_tensor
from mofme.metrics import psnr
from mofme.models import (
    DEFAULT_WEIGHTS,
    PRETRAINED,
    Restorer,
    create_model,
    load_restorer,
    shipped_weights,
)
from mofme.models.hub import SHIPPED_WEIGHTS_DIR, WEIGHTS_NAME
from mofme.train.config import load_config


@pytest.fixture(scope="module")
def model():
    return create_model("restorer_small", pretrained=True)


def test_the_default_weights_ship_small_enough():
    assert DEFAULT_WEIGHTS in shipped_weights() and set(PRETRAINED.values()) <= set(shipped_weights())
    assert (SHIPPED_WEIGHTS_DIR / DEFAULT_WEIGHTS / WEIGHTS_NAME).stat().st_size < 25 * 2**20
    assert mofme.cli.DEFAULT_WEIGHTS == DEFAULT_WEIGHTS  # the CLI's copy of the name


def test_weights_are_what_the_recipe_builds(model):
    assert isinstance(model, Restorer) and not model.training
    recipe = load_config(recipe_path("weather_gate_fixed"))  # the last stage of the recipe behind them
    assert recipe.model.resolved() == model.config
    assert load_restorer(DEFAULT_WEIGHTS).config == model.config
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("restorer_tiny", pretrained=True)


def _held_out_photo() -> np.ndarray:
    (photo,) = [p for name, p in builtin_photos("test") if name == "china"]  # never seen in training
    return photo


def _gains(model, render) -> list[float]:
    """PSNR gain (dB) on the held-out photo for three renders, ``render(photo, seed)`` -> a sample
    with ``.degraded``: one render varies by several dB, so tests average three."""
    photo = _held_out_photo()
    clean = to_tensor(photo)[None]
    gains = []
    for seed in (1, 2, 3):
        degraded = to_tensor(render(photo, seed).degraded)[None]
        gains.append(psnr(model(degraded).image, clean).item() - psnr(degraded, clean).item())
    return gains


@pytest.mark.parametrize(
    ("weather", "min_gain"),
    [("rain", 2.0), ("raindrop", 0.75)],  # raindrop: +0.14 dB before the drop detector, +1.95 with it
)
@torch.no_grad()
def test_removes_weather_from_a_held_out_photo(model, weather, min_gain):
    gains = _gains(
        model, lambda photo, seed: render_weather(photo, weather, severity=2, seed=seed, scale=0.5)
    )
    assert np.mean(gains) > min_gain, gains


@pytest.mark.parametrize("family", ["rain-noise", "snow-particles"])  # held out of its training
@torch.no_grad()
def test_removes_weather_drawn_by_a_family_it_never_trained_on(model, family):
    gains = _gains(model, lambda photo, seed: render_family(photo, family, severity=2, seed=seed))
    assert np.mean(gains) > 1.5, gains  # the per-weather target for held-out families


@torch.no_grad()
def test_keeps_a_clean_photo(model):
    clean = to_tensor(_held_out_photo())[None]
    assert psnr(model(clean).image, clean).item() > 38.0  # the do-no-harm target


def test_restore_cli_uses_the_shipped_weights_by_default(tmp_path):
    clean = np.ascontiguousarray(_held_out_photo()[:96, -96:])
    write_image(tmp_path / "photo.png", render_weather(clean, "snow", severity=2, seed=5, scale=0.5).degraded)
    assert main(["restore", str(tmp_path / "photo.png"), "--output", str(tmp_path / "out")]) == 0
    restored = read_image(tmp_path / "out" / "photo.png")
    assert restored.shape == clean.shape and not np.array_equal(restored, read_image(tmp_path / "photo.png"))


def test_a_missing_path_beside_an_existing_folder_is_not_taken_for_a_hub_repo(tmp_path, monkeypatch):
    (tmp_path / "best").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="best/model"):
        load_restorer("best/model")
