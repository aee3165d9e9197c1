"""Issue 28, do no harm: the calibrated restorer (one learned strength per image, judged from the
fixed base restorer's proposed correction) against its explicit formula, tiled, saved and loaded, on
the CPU fast path; its evidence features; and the per-image PSNR loss it trains on, against
scikit-image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio
from torchvision.transforms.functional import gaussian_blur

from mofme.infer import restore_image
from mofme.infer.fastpath import fast_path_available, inference_model, is_fast_path
from mofme.losses import RestorationLoss
from mofme.models import CONFIG_NAME, CalibratedRestorer, build_restorer, create_model, load_restorer
from mofme.models.strength import (
    DARK_PATCH,
    EVIDENCE_FEATURES,
    WORK_SIDE,
    CalibratedConfig,
    HeadEvidence,
    correction_evidence,
    correction_pair,
    dark_channel_quantiles,
    evidence_features,
    low_band,
)
from tests.standin import astronaut


def _save_base(directory, **fields):
    """A tiny restorer whose output differs from its input (randomised tail), saved."""
    torch.manual_seed(0)
    base = build_restorer(preset="tiny", residual=True, **fields)
    with torch.no_grad():
        for name, parameter in base.named_parameters():
            if name.startswith(("tail", "context_bias", "context_gate")):
                parameter.normal_(std=0.3)
    return base.save_pretrained(directory)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A global-attention base with a whole-image context and a presence gate."""
    return _save_base(tmp_path_factory.mktemp("base"), global_context=True, presence_gate=True)


@pytest.fixture(scope="module")
def windowed_dir(tmp_path_factory):
    """A windowed base: bounded reach, so its tiled restore equals its whole one."""
    return _save_base(tmp_path_factory.mktemp("windowed"), window_size=8)


def _images(*shape: int, seed: int = 2) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _references() -> torch.Tensor:
    images = _images(6, 3, 40, 48, seed=9)
    images[3:] *= 0.3  # dark images: other evidence
    return images


def _calibrated(directory) -> CalibratedRestorer:
    """A restorer_calibrated whose strength spreads over (0, 1) on :func:`_references`."""
    torch.manual_seed(1)
    model = create_model("restorer_calibrated", base=str(directory)).eval()
    out = model.strength.linear
    with torch.no_grad():
        images = _references()
        restored = model.base(images).image
        torch.nn.init.normal_(out.weight)
        torch.nn.init.normal_(model.strength.mlp[-1].weight, std=0.1)
        out.bias.zero_()
        logits = model.strength(images, restored)
        for layer in (out, model.strength.mlp[-1]):
            layer.weight.mul_(2.0 / logits.std())
        out.bias.fill_(-float(logits.mean()) * 2.0 / float(logits.std()))
    return model


@torch.no_grad()
def test_output_is_the_input_plus_the_strength_times_the_base_correction(base_dir):
    model = _calibrated(base_dir)
    images = _references()
    base = model.base(images).image
    assert float((base - images).abs().max()) > 1e-2  # the base does change the images
    head = model.strength
    evidence = head.standardise(correction_evidence(images, base))
    strength = torch.sigmoid(head.linear(evidence) + head.mlp(evidence))[:, 0]
    assert float(strength.max() - strength.min()) > 0.3  # one strength per image, not one for all
    expected = images + strength[:, None, None, None] * (base - images)
    torch.testing.assert_close(model(images).image, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(model(images, calibrate=False).image, base, rtol=0, atol=0)


@torch.no_grad()
def test_a_new_strength_is_the_prior_and_a_closed_one_returns_the_input(base_dir):
    model = create_model("restorer_calibrated", base=str(base_dir), prior=0.7).eval()
    images = _references()
    restored = model.base(images).image
    torch.testing.assert_close(model.strength_of(images, restored), torch.full((6, 1), 0.7))
    model.strength.linear.bias.fill_(-40.0)
    torch.testing.assert_close(model(images).image, images, rtol=0, atol=1e-6)


@torch.no_grad()
def test_a_strength_above_one_amplifies_the_correction_and_the_output_stays_in_range(base_dir):
    model = create_model("restorer_calibrated", base=str(base_dir), max_strength=3.0, prior=2.0).eval()
    images = _references()
    base = model.base(images).image
    torch.testing.assert_close(model.strength_of(images, base), torch.full((6, 1), 2.0))  # the prior
    torch.manual_seed(3)
    torch.nn.init.normal_(model.strength.linear.weight)
    evidence = model.strength.standardise(correction_evidence(images, base))
    strength = 3.0 * torch.sigmoid(model.strength.linear(evidence) + model.strength.mlp(evidence))[:, 0]
    assert float(strength.max()) > 1.2 and float(strength.max()) < 3.0
    expected = (images + strength[:, None, None, None] * (base - images)).clamp(0, 1)
    torch.testing.assert_close(model(images).image, expected, rtol=0, atol=1e-6)
    assert (expected != images + strength[:, None, None, None] * (base - images)).any()  # the clip did act


@pytest.mark.parametrize("fields", [{"max_strength": 0.0}, {"max_strength": 2.0, "prior": 2.0}])
def test_a_strength_range_without_room_for_the_prior_is_refused(fields):
    with pytest.raises(ValueError, match=r"max_strength|prior"):
        CalibratedConfig(**fields)


def _spread_logits(model: CalibratedRestorer, *layers: torch.nn.Linear, seed: int = 3) -> None:
    """Random output weights, so that the head's strengths differ from image to image."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            torch.nn.init.normal_(layer.weight, std=0.5)


@torch.no_grad()
def test_two_bands_scale_the_low_and_high_frequencies_of_the_correction_apart(base_dir):
    model = create_model("restorer_calibrated", base=str(base_dir), bands=2, max_strength=3.0, band_sigma=2.0)
    model.eval()
    _spread_logits(model, model.strength.linear)
    images = _references()
    base = model.base(images).image
    logits = model.strength(images, base)
    model.strength.linear.weight.div_(logits.std(0)[:, None])
    model.strength.linear.bias.sub_(logits.mean(0) / logits.std(0))  # s_low around 1.5, s_high around 0.5
    strength = model.strength_of(images, base)
    assert strength.shape == (6, 2) and float(strength[:, 0].max()) > 1.0  # the low band amplified
    assert float(strength[:, 1].max()) < 1.0  # the high band never is
    change = base - images
    low = gaussian_blur(change, kernel_size=13, sigma=2.0)  # images below the working size: a plain blur
    s_low, s_high = strength[:, :1, None, None], strength[:, 1:, None, None]
    expected = (images + s_low * low + s_high * (change - low)).clamp(0, 1)
    torch.testing.assert_close(model(images).image, expected, rtol=0, atol=1e-6)


def test_the_low_band_is_taken_at_the_working_size_and_means_the_same_at_any_photo_size():
    smooth = F.interpolate(
        _images(1, 3, 12, 16, seed=11), size=(WORK_SIDE * 3 // 4, WORK_SIDE), mode="bicubic"
    )
    torch.testing.assert_close(low_band(smooth, 3.0), gaussian_blur(smooth, kernel_size=19, sigma=3.0))
    large = F.interpolate(smooth, scale_factor=2, mode="bilinear")  # twice the working size
    expected = F.interpolate(low_band(smooth, 3.0), scale_factor=2, mode="bilinear")
    assert float((low_band(large, 3.0) - expected).abs().max()) < 0.02  # the same band, twice as large
    assert float((low_band(large, 3.0) - gaussian_blur(large, kernel_size=19, sigma=3.0)).abs().max()) > 0.02
    tiny = _images(1, 3, 5, 7, seed=12)  # smaller than the blur: still defined, the mean kept
    torch.testing.assert_close(low_band(tiny, 4.0).mean(), tiny.mean(), rtol=0, atol=0.05)


@torch.no_grad()
def test_a_pair_encoder_reads_the_photo_and_its_correction_and_is_saved(base_dir, tmp_path):
    model = create_model("restorer_calibrated", base=str(base_dir), pair_width=4).eval()
    _spread_logits(model, model.strength.mlp[-1], model.strength.mlp[0])
    images = _references()
    base = model.base(images).image
    evidence = model.strength.evidence(images, base)
    torch.testing.assert_close(evidence.pair, correction_pair(images, base))
    change = base - images
    rms = change.square().mean(dim=(1, 2, 3), keepdim=True).sqrt()
    torch.testing.assert_close(evidence.pair[:, 3:] * (rms + 1e-4), change, rtol=1e-5, atol=1e-6)
    scrambled = HeadEvidence(evidence.features, evidence.pair.flip(-2, -1).roll(7, -1))
    changed = model.strength.logits(scrambled) - model.strength.logits(evidence)
    assert float(changed.abs().max()) > 1e-3  # the layout of the correction matters, not only its statistics
    with pytest.raises(ValueError, match="pair"):
        model.strength.logits(evidence.features)
    model.save_pretrained(tmp_path)
    loaded = load_restorer(tmp_path)
    assert loaded.strength.encoder is not None
    torch.testing.assert_close(loaded(images).image, model(images).image, rtol=0, atol=0)


@pytest.mark.parametrize("fields", [{"bands": 3}, {"band_sigma": 0.0}, {"pair_width": -1}])
def test_a_bad_band_or_encoder_setting_is_refused_naming_it(fields):
    with pytest.raises(ValueError, match=next(iter(fields))):
        CalibratedConfig(**fields)


def test_evidence_is_the_stated_statistics_and_means_the_same_at_any_photo_size():
    image = _images(2, 3, 30, 50, seed=3)
    restored = (image + 0.1 * _images(2, 3, 30, 50, seed=4) - 0.05).clamp(0, 1)
    features = correction_evidence(image, restored)
    assert features.shape == (2, EVIDENCE_FEATURES)
    x, change = image.numpy(), (restored - image).numpy()
    np.testing.assert_allclose(features[:, :3].numpy(), change.mean(axis=(2, 3)), atol=1e-6)
    np.testing.assert_allclose(features[:, 3:6].numpy(), x.mean(axis=(2, 3)), atol=1e-6)
    np.testing.assert_allclose(features[:, 6].numpy(), x.min(axis=1).mean(axis=(1, 2)), atol=1e-6)
    large = F.interpolate(image, size=(3 * WORK_SIDE // 5 * 2, 2 * WORK_SIDE), mode="bilinear")
    large_restored = (large + 0.02).clamp(0, 1)
    at_work_size = [F.interpolate(t, scale_factor=0.5, mode="area") for t in (large, large_restored)]
    torch.testing.assert_close(
        correction_evidence(large, large_restored), correction_evidence(*at_work_size), rtol=1e-4, atol=1e-4
    )


def test_dark_channel_quantiles_are_those_of_scipys_minimum_filter_on_a_photo():
    from scipy.ndimage import minimum_filter

    image = astronaut(256)
    dark = minimum_filter(image[0].numpy().min(axis=0), size=DARK_PATCH, mode="nearest")
    expected = np.quantile(dark, [0.02, 0.1])
    np.testing.assert_allclose(dark_channel_quantiles(image)[0].numpy(), expected, atol=1e-6)


def test_a_veil_of_haze_lifts_the_dark_channel_quantiles_as_the_scattering_model_says():
    """x = J t + A (1 - t) with one transmission t and grey airlight A: the dark channel, a minimum,
    and its quantiles map through the same increasing affine map."""
    clean = astronaut(256)
    transmission, airlight = 0.6, 0.85
    hazy = clean * transmission + airlight * (1 - transmission)
    expected = dark_channel_quantiles(clean) * transmission + airlight * (1 - transmission)
    torch.testing.assert_close(dark_channel_quantiles(hazy), expected, rtol=0, atol=1e-5)
    assert (dark_channel_quantiles(hazy) - dark_channel_quantiles(clean) > 0.1).all()


def test_the_haze_evidence_is_appended_read_by_the_head_and_saved(base_dir, tmp_path):
    model = create_model("restorer_calibrated", base=str(base_dir), haze_evidence=True).eval()
    images = _references()
    with torch.no_grad():
        restored = model.base(images).image
    evidence = model.strength.evidence(images, restored).features
    assert evidence.shape == (len(images), evidence_features(True)) == (len(images), EVIDENCE_FEATURES + 2)
    torch.testing.assert_close(evidence[:, :EVIDENCE_FEATURES], correction_evidence(images, restored))
    torch.testing.assert_close(evidence[:, EVIDENCE_FEATURES:], dark_channel_quantiles(images))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["haze_evidence"] is True
    loaded = load_restorer(tmp_path)
    assert loaded.strength.standardise.num_features == EVIDENCE_FEATURES + 2


def test_a_head_saved_before_the_haze_evidence_existed_loads_without_it(base_dir, tmp_path):
    model = _calibrated(base_dir)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    del saved["haze_evidence"]  # config.json as written before the option
    (tmp_path / CONFIG_NAME).write_text(json.dumps(saved))
    images = _references()
    with torch.no_grad():
        torch.testing.assert_close(load_restorer(tmp_path)(images).image, model(images).image, rtol=0, atol=0)


def test_a_tiled_restore_equals_the_whole_one_over_a_seamless_base(windowed_dir, monkeypatch):
    import mofme.infer.restore as restore

    model = _calibrated(windowed_dir)
    image = _images(3, 352, 480, seed=5)
    image[:, :, 320:] *= 0.2  # a dark right third: a tile on the left sees another photo
    with torch.no_grad():
        restored = model.base(image[None]).image
        model.strength.linear.bias -= model.strength(image[None], restored)[0]  # s = 0.5 on the whole
        tile = image[None, :, :320, :320]  # what a tile alone would judge differs from the whole's 0.5
        assert abs(float(model.strength_of(tile, model.base(tile).image)) - 0.5) > 0.05
    whole = restore_image(model, image, fast=False)  # in one piece
    plan = restore.Tiling(tile=320, overlap=224, margin=model.receptive_margin, multiple_of=32)  # 2 x 3 tiles
    monkeypatch.setattr(restore, "model_tiling", lambda *args, **kwargs: plan)
    tiled = restore_image(model, image, fast=False)
    assert float((tiled - whole).abs().max()) < 1e-5


def test_saved_and_loaded_it_embeds_the_base_and_gives_the_same_output(base_dir, tmp_path):
    model = _calibrated(base_dir)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert saved["architecture"] == "CalibratedRestorer"
    assert saved["base"]["architecture"] == "Restorer" and saved["base"]["presence_gate"] is True
    loaded = load_restorer(tmp_path)  # built from the embedded config: no base folder needed
    assert isinstance(loaded, CalibratedRestorer) and loaded.config.base == saved["base"]
    images = _references()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).image, model(images).image, rtol=0, atol=0)


def test_a_base_that_fills_drops_after_stitching_is_refused(tmp_path):
    windowed = build_restorer(preset="tiny", window_size=4, drop_fill=True).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="fills drops after stitching"):
        create_model("restorer_calibrated", base=str(windowed))


@pytest.mark.skipif(not fast_path_available(), reason="no oneDNN")
@torch.no_grad()
def test_the_fast_path_runs_the_base_fast_and_gives_the_same_output(base_dir):
    model = _calibrated(base_dir)
    fast = inference_model(model, device=torch.device("cpu"))
    assert isinstance(fast, CalibratedRestorer) and is_fast_path(fast.base) and not is_fast_path(model.base)
    assert fast.strength.mlp[0].weight is model.strength.mlp[0].weight  # shared, not copied
    images = _references()
    # the base's rounding (its randomised tail amplifies it) moves the evidence too: a quarter grey level
    torch.testing.assert_close(fast(images).image, model(images).image, rtol=0, atol=1e-3)


def test_psnr_loss_is_minus_the_mean_image_psnr_of_scikit_image():
    target = _images(3, 3, 24, 20, seed=5)
    pred = (target + 0.05 * _images(3, 3, 24, 20, seed=6) - 0.025).clamp(0, 1)
    pred[2] = target[2] + 0.2 * (pred[2] - target[2])  # a better image: another PSNR
    loss = RestorationLoss(pixel="psnr", psnr_cap=200.0).pixel(pred, target)
    expected = [
        peak_signal_noise_ratio(t.double().numpy(), p.double().numpy(), data_range=1.0)
        for t, p in zip(target, pred, strict=True)
    ]
    assert float(-loss) == pytest.approx(float(np.mean(expected)), abs=1e-3)
    capped = RestorationLoss(pixel="psnr", psnr_cap=30.0).pixel(target, target)
    assert float(capped) == pytest.approx(-30.0, abs=1e-4)  # identical images score the cap
    with pytest.raises(ValueError, match="particle_weight"):
        RestorationLoss(pixel="psnr", particle_weight=1.0)


def test_psnr_loss_closes_the_strength_on_a_clean_image_and_opens_it_where_the_base_is_right(base_dir):
    model = _calibrated(base_dir)
    loss = RestorationLoss(pixel="psnr")
    logits = []
    model.strength.register_forward_hook(lambda module, args, out: out.retain_grad() or logits.append(out))
    clean, rainy = _images(1, 3, 40, 40, seed=7), _images(1, 3, 40, 40, seed=8)
    with torch.no_grad():
        restored = model.base(rainy).image  # a target the base reaches exactly
    for image, target, sign in ((clean, clean, 1.0), (rainy, restored, -1.0)):
        loss.pixel(model(image).image, target).backward()
        assert sign * float(logits[-1].grad) > 0  # gradient descent lowers / raises the strength
