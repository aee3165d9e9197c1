"""evaluate(): full-resolution metrics per weather type, the identity baseline, sources, reports."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mofme.data import BuiltinWeatherDataset, ImagePair, write_image
from mofme.evaluate.restoration import EvalReport, evaluate
from mofme.metrics import psnr, quantize
from mofme.models import create_model
from tests.standin import StandIn


def _pair(rng, height, width):
    coarse = torch.from_numpy(rng.random((1, 3, 3, 3)))
    clean = F.interpolate(coarse, size=(height, width), mode="bilinear")[0].permute(1, 2, 0).numpy()
    degraded = np.clip(clean + 0.1 * rng.standard_normal(clean.shape), 0, 1)
    return degraded.astype(np.float32), clean.astype(np.float32)


@pytest.fixture
def pairs(tmp_path):
    """1 rain pair and 2 snow pairs of odd sizes, written as 8-bit PNGs."""
    rng = np.random.default_rng(0)
    out = []
    for i, (weather, size) in enumerate([("rain", (40, 52)), ("snow", (36, 44)), ("snow", (29, 61))]):
        degraded, clean = _pair(rng, *size)
        source = write_image(tmp_path / "input" / f"{weather}_{i}.png", degraded)
        target = write_image(tmp_path / "gt" / f"{weather}_{i}.png", clean)
        out.append(ImagePair(source, target, weather))
    return out


def test_identity_model_restores_nothing(pairs):
    report = evaluate(StandIn(), pairs, tile=32, overlap=8, progress=False)
    assert list(report.per_weather) == ["rain", "snow"]
    assert report.per_weather["rain"].images == 1 and report.per_weather["snow"].images == 2
    for row in report.images:
        assert row.psnr == row.input_psnr and row.ssim == row.input_ssim
        assert 10 < row.psnr < 40 and 0 < row.ssim < 1
    for group in [*report.per_weather.values(), report.mean_over_weather, report.per_image_mean]:
        assert group.gain == 0.0


def test_aggregates_and_reports(pairs, tmp_path):
    report = evaluate(StandIn(blur=True), pairs, y_channel=True, crop_border=2, progress=False)
    rain, snow = report.images[0], report.images[1:]
    snow_mean = (snow[0].psnr + snow[1].psnr) / 2
    assert report.per_weather["snow"].psnr == pytest.approx(snow_mean)
    assert report.mean_over_weather.psnr == pytest.approx((rain.psnr + snow_mean) / 2)
    assert report.per_image_mean.psnr == pytest.approx((rain.psnr + snow[0].psnr + snow[1].psnr) / 3)
    assert report.per_image_mean.gain > 0  # blurring removes noise from a smooth image

    json_path, md_path = report.save(tmp_path / "results")
    data = json.loads(json_path.read_text())
    assert data["conventions"]["y_channel"] is True and data["conventions"]["crop_border"] == 2
    tiling = {"tile": 256, "overlap": 32, "multiple_of": 4, "blend": "raised cosine"}
    assert data["conventions"]["tiling"] == tiling
    assert set(data["per_weather"]) == {"rain", "snow"} and len(data["images"]) == 3
    assert data["mean_over_weather"]["gain"] == pytest.approx(report.mean_over_weather.gain)
    markdown = md_path.read_text()
    header = (
        "| weather | images | input PSNR | input SSIM | restored PSNR | restored SSIM | gain dB (± s.e.) |"
    )
    assert header in markdown
    gains = [row.psnr - row.input_psnr for row in snow]  # standard error: sample sd / sqrt(n)
    assert report.per_weather["snow"].gain_se == pytest.approx(abs(gains[0] - gains[1]) / 2)
    assert math.isnan(report.per_weather["rain"].gain_se)  # one image: no standard error
    assert f"± {report.per_weather['snow'].gain_se:.2f} |" in markdown
    assert "| snow | 2 |" in markdown and "mean over weather types" in markdown and "Y (BT.601)" in markdown


def test_metrics_are_on_the_quantized_full_resolution_output(pairs, tmp_path):
    model = create_model("restorer_tiny", ffn="mofme", num_experts=4, top_k=2)
    model.train()
    report = evaluate(model, pairs[:1], tile=16, overlap=4, save_images=tmp_path / "out", progress=False)
    assert model.training  # the previous mode is given back
    saved = tmp_path / "out" / "rain" / "rain_0.png"
    assert saved.is_file()
    from mofme.data import read_image

    restored = torch.from_numpy(read_image(saved)).permute(2, 0, 1)[None]
    target = torch.from_numpy(read_image(pairs[0].target)).permute(2, 0, 1)[None]
    assert restored.shape == target.shape == (1, 3, 40, 52)
    assert report.images[0].psnr == pytest.approx(psnr(restored, target).item(), abs=1e-9)
    assert (report.images[0].height, report.images[0].width) == (40, 52)


def test_size_mismatch_names_the_pair(pairs):
    bad = pairs[1]
    write_image(bad.target, np.zeros((36, 40, 3), np.float32))
    with pytest.raises(ValueError, match=r"size mismatch in pair '.*snow_1\.png'.*36x44.*36x40"):
        evaluate(StandIn(), pairs, progress=False)


def test_in_memory_samples():
    rng = np.random.default_rng(1)
    samples = []
    for i, weather in enumerate(["haze", "rain", "rain"]):
        degraded, clean = (torch.from_numpy(a).permute(2, 0, 1) for a in _pair(rng, 24, 32))
        samples.append((degraded, clean, weather, f"img{i}"))
    items = [{"input": samples[0][0], "target": samples[0][1], "weather": 2, "name": "dict"}]
    report = evaluate(StandIn(), iter(samples + items), progress=False)
    assert list(report.per_weather) == ["rain", "haze"]  # WEATHER_TYPES order
    assert report.per_weather["haze"].images == 2
    expected = psnr(quantize(samples[0][0][None]), quantize(samples[0][1][None])).item()
    assert report.images[0].input_psnr == pytest.approx(expected)

    identical = evaluate(StandIn(), [(samples[0][1], samples[0][1], "snow", "same")], progress=False)
    assert math.isinf(identical.images[0].psnr)
    assert json.loads(identical.to_json())["per_weather"]["snow"]["psnr"] == "inf"
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(StandIn(), [], progress=False)


def test_builtin_benchmark_in_memory():
    dataset = BuiltinWeatherDataset("test", weathers=("rain", "snow"), long_side=64)
    report = evaluate(StandIn(), dataset, progress=False)
    assert isinstance(report, EvalReport)
    assert (
        list(report.per_weather) == ["rain", "snow"] and len(report.images) == len(dataset) == 2 * 2 * 3 * 4
    )
    by_severity = report.per_weather_severity
    assert list(by_severity) == [(w, s) for w in ("rain", "snow") for s in (1, 2, 3)]
    assert all(group.images == 2 * 4 for group in by_severity.values())
    assert "| snow s3 | 8 |" in report.to_markdown()
    assert report.mean_over_weather.gain == 0.0


def test_clean_photos_score_without_a_standard_error_or_a_warning(pairs):
    """Weather-free items (input = target: input PSNR infinite) have no gain to average: no standard
    error, and no numpy warning from subtracting infinities."""
    import warnings

    clean = [ImagePair(pair.target, pair.target, "clean") for pair in pairs[1:]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group = evaluate(StandIn(blur=True), clean, progress=False).per_weather["clean"]
    assert group.images == 2 and math.isinf(group.input_psnr)
    assert math.isnan(group.gain_se)
    assert group.psnr < 60  # the blur did change the photos


def test_clean_photos_stay_out_of_the_means(pairs):
    clean = [ImagePair(pair.target, pair.target, "clean") for pair in pairs[1:]]
    report = evaluate(StandIn(blur=True), [*pairs, *clean], progress=False)
    weathered = evaluate(StandIn(blur=True), pairs, progress=False)
    assert list(report.per_weather) == ["rain", "snow", "clean"]
    for summary in ("mean_over_weather", "per_image_mean"):  # gain_se nan: one rain image
        expected = dataclasses.asdict(getattr(weathered, summary))
        assert dataclasses.asdict(getattr(report, summary)) == pytest.approx(expected, nan_ok=True)
    assert math.isfinite(report.mean_over_weather.gain) and report.mean_over_weather.images == 3
