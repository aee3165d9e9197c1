"""Tiled inference: window layout, blending weights, exactness and seams."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mofme.infer.tiling import axis_weights, axis_windows, blend_weights, tile_windows, tiled_apply

SIZES = [(37, 101), (300, 513), (64, 64), (1, 9), (129, 250)]
CONFIGS = [(32, 8), (48, 16), (64, 0), (24, 13)]  # (tile, overlap)


def _image(c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("tile", "overlap"), CONFIGS)
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_blend_weights_sum_to_one_and_cover_everything(height, width, tile, overlap):
    total = torch.zeros(height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.int64)
    windows = tile_windows(height, width, tile=tile, overlap=overlap)
    pairs = list(blend_weights(height, width, tile=tile, overlap=overlap, dtype=torch.float64))
    assert [w for w, _ in pairs] == windows
    for (rows, cols), weight in pairs:
        assert weight.shape == (rows.stop - rows.start, cols.stop - cols.start)
        assert weight.shape == (min(tile, height), min(tile, width))  # all windows have one size
        assert (weight > 0).all()  # never zero, in particular not at the image border
        total[rows, cols] += weight
        count[rows, cols] += 1
    assert (count >= 1).all()
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)
    # Pixels covered by one window only get weight exactly 1.
    assert (total[count == 1] == 1).all()


@pytest.mark.parametrize(("tile", "overlap"), CONFIGS)
def test_axis_windows_layout(tile, overlap):
    for size in (1, tile - 1, tile, tile + 1, 3 * tile + 7):
        windows = axis_windows(size, tile=tile, overlap=overlap)
        assert windows[0][0] == 0 and windows[-1][1] == size
        for (s0, e0), (s1, e1) in itertools.pairwise(windows):
            assert e0 - s0 == e1 - s1 == tile
            assert s0 < s1 and e0 - s1 >= overlap  # overlap at least as asked, no gaps
        weights = axis_weights(size, tile=tile, overlap=overlap)
        assert [len(w) for w in weights] == [e - s for s, e in windows]


def test_weights_are_smooth_ramps():
    (w0, w1) = axis_weights(56, tile=32, overlap=8)
    # Window 0 covers [0, 32), window 1 covers [24, 56): overlap [24, 32).
    assert (w0[:24] == 1).all() and (w1[8:] == 1).all()
    ramp = w1[:8]
    assert (ramp.diff() > 0).all() and 0 < ramp[0] < 0.05 and 0.95 < ramp[-1] < 1
    torch.testing.assert_close(w0[24:] + ramp, torch.ones(8, dtype=torch.float64), rtol=0, atol=1e-15)


@pytest.mark.parametrize("shape", [(3, 40, 56), (3, 33, 61), (1, 1, 1), (2, 5, 200)])
def test_single_tile_is_bit_identical_to_untiled(shape):
    image = _image(*shape)
    conv = torch.nn.Conv2d(shape[0], 4, 3, padding=1)
    multiple = 8
    ph, pw = -(-shape[1] // multiple) * multiple, -(-shape[2] // multiple) * multiple
    tile = max(ph, pw)
    mode = "reflect" if ph - shape[1] < shape[1] and pw - shape[2] < shape[2] else "replicate"
    padded = F.pad(image[None], (0, pw - shape[2], 0, ph - shape[1]), mode=mode)
    with torch.no_grad():
        expected = conv(padded)[..., : shape[1], : shape[2]]
    out = tiled_apply(conv, image[None], tile=tile, overlap=tile // 2, multiple_of=multiple)
    assert out.shape == (1, 4, *shape[1:])
    assert torch.equal(out, expected)
    out3 = tiled_apply(conv, image, tile=tile, overlap=tile // 2, multiple_of=multiple)
    assert out3.shape == (4, *shape[1:]) and torch.equal(out3, expected[0])


def test_fn_sees_padded_multiples_and_output_is_cropped():
    image = _image(3, 37, 101)
    seen = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return x

    out = tiled_apply(fn, image, tile=48, overlap=16, multiple_of=16, batch_size=3)
    assert out.shape == image.shape
    assert all(h % 16 == 0 and w % 16 == 0 for _, _, h, w in seen)
    assert all(b <= 3 for b, *_ in seen) and sum(b for b, *_ in seen) == len(
        tile_windows(48, 112, tile=48, overlap=16)
    )


@pytest.mark.parametrize(("height", "width"), [(37, 101), (300, 513), (17, 9)])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_identity_reproduces_the_input(height, width, batch_size):
    image = _image(3, height, width)
    out = tiled_apply(lambda x: x, image, tile=64, overlap=16, multiple_of=8, batch_size=batch_size)
    assert out.shape == image.shape and out.dtype == image.dtype
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fn", [lambda x: x * 2 + 1, torch.sigmoid, lambda x: x.mean(1, keepdim=True).exp()])
def test_pointwise_fn_tiled_equals_untiled(fn):
    image = _image(3, 300, 513, seed=1)
    out = tiled_apply(fn, image[None], tile=96, overlap=24, multiple_of=8, batch_size=2)
    expected = fn(image[None])
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_conv_has_no_seams_when_overlap_covers_the_receptive_field():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv2d(8, 3, 3, padding=1)
    )
    image = _image(3, 203, 317, seed=2)
    with torch.no_grad():
        expected = conv(F.pad(image[None], (0, 3, 0, 5), mode="reflect"))[..., :203, :317]
    tiled = tiled_apply(conv, image[None], tile=64, overlap=16, multiple_of=8, batch_size=3)
    diff = (tiled - expected).abs()[0].amax(0)
    # Away from the seams (pixels covered by one window, >= 2 px from its border) the output is exact up to
    # float rounding (convolution algorithms differ with the input size).
    count = torch.zeros(208, 320)
    for rows, cols in tile_windows(208, 320, tile=64, overlap=16):
        count[rows, cols] += 1
    inner = torch.zeros(208, 320, dtype=torch.bool)
    for rows, cols in tile_windows(208, 320, tile=64, overlap=16):
        inner[rows.start + 2 : rows.stop - 2, cols.start + 2 : cols.stop - 2] = True
    exact = ((count == 1) & inner)[:203, :317]
    assert exact.float().mean() > 0.3
    assert diff[exact].max() < 1e-6
    # At the seams the raised-cosine blending makes the zero-padded tile borders negligible.
    assert diff.max() < 5e-3
    # Without blending (overlap 0) the seams are plainly visible: the test above can fail.
    hard = tiled_apply(conv, image[None], tile=64, overlap=0, multiple_of=8)
    assert (hard - expected).abs().max() > 20 * diff.max()


def test_output_device_and_dtype_follow_fn():
    image = _image(3, 70, 90)
    out = tiled_apply(lambda x: x.double() * 3, image, tile=32, overlap=8)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, image.double() * 3, rtol=0, atol=1e-12)
    half = tiled_apply(lambda x: x.to(torch.bfloat16), image, tile=32, overlap=8)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), image, rtol=0, atol=4e-3)


def test_progress_callback():
    calls = []
    tiled_apply(
        lambda x: x,
        _image(1, 100, 100),
        tile=32,
        overlap=8,
        batch_size=4,
        progress=lambda d, t: calls.append((d, t)),
    )
    total = len(tile_windows(104, 104, tile=32, overlap=8))
    assert calls[-1] == (total, total) and [d for d, _ in calls] == sorted({d for d, _ in calls})


def test_progress_bar(capsys):
    out = tiled_apply(lambda x: x, _image(1, 100, 100), tile=32, overlap=8, progress=True)
    assert out.shape == (1, 100, 100)
    assert "tiles" in capsys.readouterr().err


def test_large_image_runs_in_bounded_memory():
    image = torch.zeros(3, 3000, 4000)
    image[:, ::7, ::5] = 1.0
    calls = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x

    out = tiled_apply(fn, image, tile=1024, overlap=32, batch_size=2)
    n_windows = len(tile_windows(3000, 4000, tile=1024, overlap=32))
    assert out.shape == image.shape and max(calls) <= 2 and sum(calls) == n_windows >= 12
    torch.testing.assert_close(out, image, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 64, "overlap": 64}, "overlap"),
        ({"tile": 64, "overlap": 80}, "overlap"),
        ({"tile": 64, "overlap": -1}, "overlap"),
        ({"tile": 60, "overlap": 8, "multiple_of": 8}, "multiple"),
        ({"tile": 64, "overlap": 8, "batch_size": 0}, "batch_size"),
        ({"tile": 64, "overlap": 8, "multiple_of": 0}, "multiple_of"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiled_apply(lambda x: x, _image(3, 20, 20), **kwargs)


def test_bad_inputs_and_fn_raise():
    with pytest.raises(ValueError, match="image"):
        tiled_apply(lambda x: x, torch.rand(2, 3, 16, 16), tile=16, overlap=4)
    with pytest.raises(ValueError, match="spatial size"):
        tiled_apply(lambda x: x[..., ::2, ::2], _image(3, 40, 40), tile=16, overlap=4)
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(10, 10, tile=8, overlap=8)
