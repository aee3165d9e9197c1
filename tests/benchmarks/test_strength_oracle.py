"""The strength oracle (mofme bench strength-oracle): the least-squares strengths of a correction,
checked on a photograph against their defining properties."""

from __future__ import annotations

import math

import torch

from mofme.benchmarks.strength_oracle import oracle_scores, oracle_strengths
from mofme.models.strength import low_band
from tests.standin import astronaut


def test_a_timid_correction_gets_the_strength_that_completes_it():
    clean = astronaut(96)
    hazy = 0.6 * clean + 0.4 * 0.9  # a veil of haze
    timid = hazy + 0.4 * (clean - hazy)  # the right direction, 40% of the way
    scores = oracle_scores(hazy, timid, clean, max_strength=4.0)
    assert math.isclose(scores["s"], 2.5, rel_tol=1e-6)
    assert scores["oracle_max"] > 90  # the whole error removed (float32 rounding left)
    assert math.isclose(scores["oracle_1"], scores["base"], abs_tol=1e-6)  # capped at 1: the base itself
    assert scores["base"] > scores["input"]
    capped = oracle_scores(hazy, timid, clean, max_strength=2.0)
    assert scores["oracle_max"] > capped["oracle_max"] > capped["base"]


def test_the_two_band_strengths_are_the_least_squares_fit():
    clean = astronaut(96)
    generator = torch.Generator().manual_seed(0)
    degraded = (clean + 0.1 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    restored = (
        degraded + 0.5 * (clean - degraded) + 0.02 * torch.randn(clean.shape, generator=generator)
    ).clamp(0, 1)
    single, s_low, s_high = oracle_strengths(degraded, restored, clean, sigma=2.0)
    change, error = (restored - degraded).double(), (clean - degraded).double()
    low = low_band(change, 2.0)
    residual = error - s_low * low - s_high * (change - low)
    for band in (low, change - low):  # normal equations: the residual is orthogonal to both bands
        assert abs(float((residual * band).sum())) < 1e-6 * float(band.square().sum())
    assert abs(float(((error - single * change) * change).sum())) < 1e-6 * float(change.square().sum())
    two_band = float((residual.square()).sum())
    assert two_band <= float((error - single * change).square().sum())  # two strengths fit at least as well


def test_the_cli_scores_renders_of_a_photo_folder_per_family(tmp_path):
    import json

    from mofme.benchmarks.strength_oracle import main
    from mofme.data import write_image
    from mofme.models import build_restorer

    photo = (astronaut(96)[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    for index in range(3):
        write_image(tmp_path / "photos" / f"p{index}.png", photo[:, index * 8 :])
    torch.manual_seed(0)
    checkpoint = build_restorer(preset="tiny", residual=True).save_pretrained(tmp_path / "model")
    argv = ["--checkpoint", str(checkpoint), "--photos", str(tmp_path / "photos"), "--stride", "2"]
    argv += [
        "--families",
        "haze-classic",
        "rain-noise",
        "--long-side",
        "64",
        "--json",
        str(tmp_path / "o.json"),
    ]
    assert main(argv) == 0
    groups = json.loads((tmp_path / "o.json").read_text())["groups"]
    assert set(groups) == {"haze-classic", "rain-noise", "mean"}
    assert groups["haze-classic"]["images"] == 2 * 3  # photos 0 and 2, three severities
    assert groups["haze-classic"]["oracle_max"] >= groups["haze-classic"]["oracle_1"] - 1e-9
