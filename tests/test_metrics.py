"""PSNR / SSIM against scikit-image on real photographs with realistic degradations."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color, data, filters
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mofme.metrics import psnr, quantize, rgb_to_y, ssim

PSNR_TOL = 1e-4  # dB
SSIM_TOL = 1e-4


def _photo(name: str) -> np.ndarray:
    """A real RGB photograph, downscaled 2x by striding to keep the tests fast (uint8, HxWx3)."""
    return np.ascontiguousarray(getattr(data, name)()[::2, ::2, :3])


def _jpeg(img: np.ndarray, quality: int = 20) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def _noisy(img: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(img / 255.0 + rng.normal(0.0, 0.05, img.shape), 0.0, 1.0)


def _blurred(img: np.ndarray) -> np.ndarray:
    return filters.gaussian(img / 255.0, sigma=2.0, channel_axis=-1)


def _float(img: np.ndarray) -> np.ndarray:
    return img / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)


def _tensor(img: np.ndarray) -> torch.Tensor:
    """HxWxC (uint8 or float in [0, 1]) -> 1xCxHxW float32 in [0, 1]."""
    arr = _float(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr).permute(2, 0, 1)[None].float()


def _sk_ssim(a: np.ndarray, b: np.ndarray, channel_axis: int | None = 2) -> float:
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=channel_axis,
    )


def _sk_y(img: np.ndarray) -> np.ndarray:
    """skimage's BT.601 luma (Y in [16, 235] for float input in [0, 1]) moved to the [0, 1] scale."""
    return color.rgb2ycbcr(img)[..., 0] / 255.0


DEGRADATIONS = {"jpeg20": _jpeg, "noise": _noisy, "blur": _blurred}
PHOTOS = ["astronaut", "chelsea", "coffee"]


@pytest.fixture(scope="module")
def pairs() -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(photo, degradation) -> (degraded, clean), both float64 HxWx3 in [0, 1] (float32-representable)."""
    out = {}
    for photo in PHOTOS:
        clean = _photo(photo)
        for deg_name, degrade in DEGRADATIONS.items():
            # Round-trip through float32 so that numpy and torch see exactly the same values.
            degraded = _float(degrade(clean)).astype(np.float32).astype(np.float64)
            out[photo, deg_name] = degraded, _float(clean)
    return out


CASES = [(p, d) for p in PHOTOS for d in DEGRADATIONS]


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_rgb_matches_skimage(pairs, case):
    degraded, clean = pairs[case]
    pred, target = _tensor(degraded), _tensor(clean)
    ref_psnr = peak_signal_noise_ratio(clean, degraded, data_range=1.0)
    ref_ssim = _sk_ssim(degraded, clean)
    assert 15.0 < ref_psnr < 40.0 and 0.3 < ref_ssim < 0.99  # the degradations are real, not trivial
    assert psnr(pred, target).item() == pytest.approx(ref_psnr, abs=PSNR_TOL)
    assert ssim(pred, target).item() == pytest.approx(ref_ssim, abs=SSIM_TOL)


@pytest.mark.parametrize("case", CASES[:4], ids=["-".join(c) for c in CASES[:4]])
def test_y_channel_matches_skimage_rgb2ycbcr(pairs, case):
    degraded, clean = pairs[case]
    pred, target = _tensor(degraded), _tensor(clean)
    y_pred, y_clean = _sk_y(degraded), _sk_y(clean)
    assert y_clean.min() >= 16 / 255 - 1e-9 and y_clean.max() <= 235 / 255 + 1e-9
    ref_psnr = peak_signal_noise_ratio(y_clean, y_pred, data_range=1.0)
    ref_ssim = _sk_ssim(y_pred, y_clean, channel_axis=None)
    assert psnr(pred, target, y_channel=True).item() == pytest.approx(ref_psnr, abs=PSNR_TOL)
    assert ssim(pred, target, y_channel=True).item() == pytest.approx(ref_ssim, abs=SSIM_TOL)
    # The Y path is a different number from the RGB path (this would catch a y_channel flag that is ignored).
    assert abs(psnr(pred, target, y_channel=True).item() - psnr(pred, target).item()) > 0.05
    # A one-channel input is taken as luma already.
    y_tensor = rgb_to_y(pred.double())
    assert psnr(y_tensor, rgb_to_y(target.double()), y_channel=True).item() == pytest.approx(
        ref_psnr, abs=PSNR_TOL
    )
    assert torch.allclose(y_tensor[0, 0], torch.from_numpy(y_pred), atol=1e-6)


def test_crop_border_matches_skimage_on_cropped(pairs):
    degraded, clean = pairs["coffee", "jpeg20"]
    pred, target = _tensor(degraded), _tensor(clean)
    b = 7
    d, c = degraded[b:-b, b:-b], clean[b:-b, b:-b]
    assert psnr(pred, target, crop_border=b).item() == pytest.approx(
        peak_signal_noise_ratio(c, d, data_range=1.0), abs=PSNR_TOL
    )
    assert ssim(pred, target, crop_border=b).item() == pytest.approx(_sk_ssim(d, c), abs=SSIM_TOL)
    # Y conversion and crop combined.
    ref = peak_signal_noise_ratio(_sk_y(c), _sk_y(d), data_range=1.0)
    assert psnr(pred, target, y_channel=True, crop_border=b).item() == pytest.approx(ref, abs=PSNR_TOL)


def test_crop_border_removes_a_corrupted_rim():
    rng = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, 40, 50, generator=rng)
    pred = target.clone()
    pred[..., :3, :] = 0.0  # damage only a 3-pixel rim at the top
    assert psnr(pred, target).isfinite()
    assert psnr(pred, target, crop_border=3).item() == float("inf")
    assert ssim(pred, target, crop_border=3).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim(pred, target).item() < 1 - 1e-3


def test_identical_images_give_inf_psnr_and_unit_ssim(pairs):
    _, clean = pairs["chelsea", "noise"]
    x = _tensor(clean)
    p = psnr(x, x.clone())
    assert p.shape == (1,) and torch.isinf(p).all() and (p > 0).all()
    assert ssim(x, x.clone()).item() == pytest.approx(1.0, abs=1e-12)
    assert torch.isinf(psnr(x, x, y_channel=True)).all()


def test_batch_gives_per_image_values(pairs):
    preds, targets = zip(*(pairs[p, "jpeg20"] for p in PHOTOS), strict=True)
    # Different photos have different sizes: crop to a common (small) size to stack them.
    h, w = 96, 128
    pred = torch.cat([_tensor(p[:h, :w]) for p in preds])
    target = torch.cat([_tensor(t[:h, :w]) for t in targets])
    for metric in (psnr, ssim):
        for kwargs in ({}, {"y_channel": True, "crop_border": 4}):
            batched = metric(pred, target, **kwargs)
            assert batched.shape == (3,) and batched.dtype == torch.float64
            single = torch.cat([metric(pred[i : i + 1], target[i : i + 1], **kwargs) for i in range(3)])
            torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)
            assert len(set(batched.tolist())) == 3  # genuinely per-image values


def test_data_range_scales_consistently(pairs):
    degraded, clean = pairs["astronaut", "blur"]
    pred, target = _tensor(degraded), _tensor(clean)
    for metric in (psnr, ssim):
        ref = metric(pred, target)
        torch.testing.assert_close(metric(pred * 255, target * 255, data_range=255.0), ref, rtol=0, atol=1e-6)
    # Values are not silently rescaled: 0..255 data with the default data_range=1 gives a different PSNR.
    assert psnr(pred * 255, target * 255).item() < psnr(pred, target).item() - 40


def test_matches_torchmetrics_ssim_map_on_the_valid_region(pairs):
    """Cross-check against torchmetrics: its SSIM map, cropped to the valid region, is our value. Its default
    reduction averages the reflection-padded rim too, which is why we do not use it."""
    tm = pytest.importorskip("torchmetrics.functional.image")
    degraded, clean = pairs["astronaut", "jpeg20"]
    pred, target = _tensor(degraded).double(), _tensor(clean).double()
    _, full = tm.structural_similarity_index_measure(
        pred, target, data_range=1.0, reduction="none", return_full_image=True
    )
    if full.shape[-2:] != pred.shape[-2:]:
        pytest.skip("this torchmetrics version returns a different SSIM map layout")
    assert ssim(pred, target).item() == pytest.approx(full[..., 5:-5, 5:-5].mean().item(), abs=1e-10)


def test_quantize():
    x = torch.tensor([-0.2, 0.0, 0.5 / 255, 1.5 / 255, 0.31, 0.999, 1.0, 1.7])
    q = quantize(x)
    assert torch.equal(q * 255, torch.round(q * 255))  # on 8-bit levels
    assert q.min() == 0.0 and q.max() == 1.0  # clipped to [0, 1]
    torch.testing.assert_close(q[4], torch.tensor(79 / 255))
    assert torch.equal(quantize(q), q)  # idempotent
    # The metrics do not quantize by themselves.
    rng = torch.Generator().manual_seed(1)
    target = quantize(torch.rand(1, 3, 32, 32, generator=rng))
    pred = target + 0.4 / 255
    assert psnr(pred, target).isfinite().all()
    assert torch.isinf(psnr(quantize(pred), target)).all()


def test_invalid_inputs_raise():
    a = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 32\).*\(2, 3, 32, 31\)"):
        psnr(a, a[..., :31])
    with pytest.raises(ValueError, match=r"\(2, 3, 32, 32\).*\(1, 3, 32, 32\)"):
        ssim(a, a[:1])
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match="N, C, H, W"):
            metric(a[0], a[0])
        with pytest.raises(ValueError, match="N, C, H, W"):
            metric(a[None], a[None])
        with pytest.raises(TypeError):
            metric((a * 255).to(torch.uint8), (a * 255).to(torch.uint8))
        with pytest.raises(ValueError, match="crop_border"):
            metric(a, a, crop_border=16)
        with pytest.raises(ValueError, match="y_channel"):
            metric(a[:, :2], a[:, :2], y_channel=True)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[..., :10, :], a[..., :10, :])
