"""Windowed (and shifted-window) attention of the Restorer: against a dense per-window reference,
against global attention, locality, and translation consistency on the window grid."""

from __future__ import annotations

import math

import pytest
import torch

from mofme.models import build_restorer, create_model
from mofme.models.restorer import (
    Attention,
    window_key_mask,
    window_merge,
    window_partition,
    window_reach,
)

DIM, HEADS, HEAD_DIM = 24, 3, 8


def _attention(window_size: int | None, shift: int = 0, seed: int = 0) -> Attention:
    torch.manual_seed(seed)
    return Attention(DIM, num_heads=HEADS, head_dim=HEAD_DIM, window_size=window_size, shift=shift).eval()


def _reference(attn: Attention, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Windowed attention computed token by token: each token attends, with a plain softmax, to the
    real tokens of its window (window boundaries at k * window - shift on both axes)."""
    n, _, _ = x.shape
    ws, shift = attn.window_size, attn.shift
    qkv = attn.qkv(x).view(n, *grid, 3, HEADS, HEAD_DIM)
    q, k, v = qkv.unbind(3)  # (N, h, w, heads, hd)
    rows = torch.arange(grid[0])
    cols = torch.arange(grid[1])
    out = torch.zeros(n, *grid, HEADS, HEAD_DIM)
    for i in range(grid[0]):
        for j in range(grid[1]):
            same_rows = rows[(rows + shift) // ws == (i + shift) // ws]
            same_cols = cols[(cols + shift) // ws == (j + shift) // ws]
            keys = k[:, same_rows][:, :, same_cols].flatten(1, 2)  # (N, m, heads, hd)
            values = v[:, same_rows][:, :, same_cols].flatten(1, 2)
            scores = torch.einsum("nhd,nmhd->nhm", q[:, i, j], keys) / math.sqrt(HEAD_DIM)
            out[:, i, j] = torch.einsum("nhm,nmhd->nhd", scores.softmax(-1), values)
    return attn.proj(out.flatten(3).flatten(1, 2))


@pytest.mark.parametrize("grid", [(8, 8), (7, 11), (3, 5), (1, 1)])
@pytest.mark.parametrize(("window", "shift"), [(4, 0), (4, 2), (3, 1)])
@torch.no_grad()
def test_windowed_attention_matches_a_dense_reference(grid, window, shift):
    attn = _attention(window, shift)
    x = torch.randn(2, grid[0] * grid[1], DIM)
    torch.testing.assert_close(attn(x, grid), _reference(attn, x, grid), rtol=1e-5, atol=1e-5)


def test_partition_and_merge_are_inverse_and_mask_the_padding():
    grid, window, shift = (5, 7), 4, 2
    x = torch.randn(2, 35, 3)
    windows = window_partition(x, grid, window, shift)
    assert windows.shape == (2 * 2 * 3, 16, 3)  # padded grid (2 + 5 + 1) x (2 + 7 + 3)
    assert torch.equal(window_merge(windows, grid, window, shift), x)
    mask = window_key_mask(grid, window, shift)
    assert mask.shape == (6, 16) and mask.any(1).all() and int(mask.sum()) == 35
    assert torch.equal(windows[:6][~mask], torch.zeros(int((~mask).sum()), 3))
    assert window_key_mask((8, 8), 4, 0) is None  # nothing padded: no mask


@torch.no_grad()
def test_one_window_over_the_whole_grid_is_global_attention():
    x = torch.randn(2, 6 * 5, DIM)
    windowed, plain = _attention(8), _attention(None)
    assert windowed.state_dict().keys() == plain.state_dict().keys()  # no new parameters
    torch.testing.assert_close(windowed(x, (6, 5)), plain(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="token grid"):
        windowed(x)


def test_window_reach():
    assert window_reach(2, window=8, depth=1) == 8
    assert window_reach(2, window=8, depth=2) == 12  # then the shifted windows: 1.5 windows
    assert window_reach(0, window=8, depth=2) == 4  # the shifted windows straddle the cut
    assert window_reach(1, window=5, depth=2) == 8  # odd window: the right side reaches further


def _models(**fields):
    torch.manual_seed(0)
    windowed = build_restorer(preset="small_window", ffn="dense", **fields).eval()
    plain = build_restorer(preset="small", ffn="dense", **fields).eval()
    plain.load_state_dict(windowed.state_dict())  # the same parameters, global attention
    return windowed, plain


@torch.no_grad()
def test_a_pixel_change_stays_local_with_windows_only():
    windowed, plain = _models()
    image = torch.rand(1, 3, 128, 192)
    changed = image.clone()
    changed[..., 10, 10] = 1 - changed[..., 10, 10]
    far = (slice(None), slice(None), slice(64 + 8, None), slice(64 + 8, None))  # > 54 px away
    assert windowed.receptive_margin == 54
    out, out_changed = windowed(image).image, windowed(changed).image
    assert not torch.equal(out, out_changed) and torch.equal(out[far], out_changed[far])
    assert not torch.equal(plain(image).image[far], plain(changed).image[far])


@torch.no_grad()
def test_windowed_restorer_is_translation_consistent_on_the_window_grid():
    windowed, _ = _models()
    step = windowed.size_multiple  # 32 px: patch 4 x window 8
    image = torch.rand(1, 3, 6 * step, 7 * step)
    crop = image[..., 2 * step : 5 * step, step : 6 * step]
    whole, part = windowed(image).image, windowed(crop).image
    m = windowed.receptive_margin
    inner_whole = whole[..., 2 * step + m : 5 * step - m, step + m : 6 * step - m]
    torch.testing.assert_close(part[..., m:-m, m:-m], inner_whole, rtol=0, atol=1e-5)


@torch.no_grad()
def test_shipped_weights_load_with_windows():
    model = create_model("restorer_small", pretrained=True, window_size=8)
    assert model.config.window_size == 8 and model.size_multiple == 32
    # drop_fill: the detector's reach (the fill itself runs on the stitched image, restore_tensor)
    assert model.receptive_margin == model.drop_head.receptive_margin == 93
    assert model(torch.rand(1, 3, 40, 36)).image.shape == (1, 3, 40, 36)


def test_windowed_restorer_exports_to_onnx():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

    class ImageOnly(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x).image

    windowed, _ = _models()
    model, x = ImageOnly(windowed).eval(), torch.rand(1, 3, 64, 96)  # a 16 x 24 grid: windows padded, masked
    program = torch.onnx.export(model, (x,), dynamo=True, verbose=False)
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=0, atol=1e-4)
