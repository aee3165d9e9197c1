"""Issue 28, no seams: a windowed Restorer restored tile by tile equals the whole-image restoration
(zero-weight margins of ``model.receptive_margin`` on tiles aligned to its windows); a global-attention
one does not (each tile estimates its own global correction)."""

from __future__ import annotations

import pytest
import torch

from mofme.apps.serve.jobs import count_tiles
from mofme.infer.restore import Tiling, model_tiling, restore_image
from mofme.infer.tiling import axis_weights, axis_windows, tiled_apply
from mofme.models import build_restorer
from mofme.models.restorer import pad_to_multiple

LEVEL = 1 / 255
TILES = {"tile": 224, "overlap": 128, "multiple_of": 32, "batch_size": 2}  # 2 x 3 tiles of 320 x 448


def _gradient_photo(height: int = 320, width: int = 448) -> torch.Tensor:
    """A smooth (1, 3, H, W) photo: a colour gradient, a soft vignette and a mild texture."""
    y = torch.linspace(0, 1, height)[:, None].expand(height, width)
    x = torch.linspace(0, 1, width)[None, :].expand(height, width)
    colour = torch.stack([0.2 + 0.6 * x + 0.1 * y, 0.3 + 0.4 * y, 0.7 - 0.4 * x * y])
    vignette = 1 - 0.7 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    texture = 0.02 * torch.sin(97 * x) * torch.sin(61 * y + 3 * x)
    return (colour * vignette + texture).clamp(0, 1)[None]


def _model(preset: str):
    torch.manual_seed(0)
    return build_restorer(preset=preset).eval()  # MoFME FFN, 16 experts, top 2


@torch.no_grad()
def _whole_and_tiled(model, margin: int) -> tuple[torch.Tensor, torch.Tensor]:
    image = _gradient_photo()
    fn = lambda tiles: model(tiles).image  # noqa: E731
    return fn(image), tiled_apply(fn, image, margin=margin, **TILES)


def test_windowed_tiles_match_the_whole_image():
    model = _model("small_window")
    assert model.size_multiple == TILES["multiple_of"] and model.receptive_margin == 54
    whole, tiled = _whole_and_tiled(model, model.receptive_margin)
    assert float((whole - tiled).abs().max()) <= LEVEL  # measured: 3e-7


def test_global_attention_tiles_show_seams():
    model = _model("small")
    assert model.receptive_margin is None
    whole, tiled = _whole_and_tiled(model, 54)
    assert float((whole - tiled).abs().max()) > LEVEL  # measured: 0.039 (10 levels)


@torch.no_grad()
def test_receptive_margin_bounds_what_a_cut_changes():
    """Restore a 256 x 256 image and its centre 128 x 128 (cut on the window grid): beyond the margin
    from the cut the outputs agree; inside it they differ up to near the margin (the bound is tight)."""
    model = _model("small_window")
    margin, cut = model.receptive_margin, 64
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    whole = model(image).image[..., cut:-cut, cut:-cut]
    part = model(image[..., cut:-cut, cut:-cut]).image
    diff = (whole - part).abs().amax((0, 1))  # (128, 128)
    index = torch.arange(128)
    edge = torch.minimum(index, 127 - index)
    distance = torch.minimum(edge[:, None], edge[None, :])  # pixels to the nearest cut
    assert float(diff[distance >= margin].max()) < 1e-5
    assert int(distance[diff > 1e-4].max()) >= margin - 12  # measured: 46 (1e-6: 51) for 54


def test_margin_weights_are_zero_facing_a_neighbour_and_sum_to_one():
    size, tile, overlap, margin = 300, 96, 40, 12
    windows = axis_windows(size, tile=tile, overlap=overlap)
    weights = axis_weights(size, tile=tile, overlap=overlap, margin=margin)
    total = torch.zeros(size, dtype=torch.float64)
    for k, ((start, stop), w) in enumerate(zip(windows, weights, strict=True)):
        total[start:stop] += w
        assert (w[:margin] == 0).all() == (k > 0)  # the image border is never zeroed
        assert (w[-margin:] == 0).all() == (k < len(windows) - 1)
        assert (w[margin:-margin] > 0).all()
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)
    assert axis_weights(size, tile=tile, overlap=overlap, margin=0)[0][-1] > 0  # margin 0: as before


def test_margin_settings_are_checked():
    image = torch.rand(3, 100, 100)
    with pytest.raises(ValueError, match=r"overlap >= 2 \* margin \+ 1 = 25"):
        tiled_apply(lambda x: x, image, tile=64, overlap=24, margin=12, multiple_of=8)
    with pytest.raises(ValueError, match="multiple of multiple_of"):
        tiled_apply(lambda x: x, image, tile=64, overlap=28, margin=12, multiple_of=8)
    with pytest.raises(ValueError, match="margin must be >= 0"):
        tiled_apply(lambda x: x, image, tile=64, overlap=24, margin=-1, multiple_of=8)


@pytest.mark.parametrize(("multiple", "tile", "overlap"), [(32, 224, 128), (32, 640, 160), (8, 64, 24)])
def test_tile_starts_stay_on_the_grid(multiple, tile, overlap):
    for size in range(multiple, 6 * tile, multiple):  # tiled_apply pads to multiple_of first
        starts = [start for start, _ in axis_windows(size, tile=tile, overlap=overlap)]
        assert all(start % multiple == 0 for start in starts), (size, starts)


def test_model_tiling():
    windowed, plain = _model("small_window"), _model("small")
    assert model_tiling(plain, 3000, 4000, tile=256, overlap=32) == Tiling(256, 32, 0, 4)
    assert model_tiling(windowed, 300, 450, tile=256, overlap=32) == Tiling(480, 0, 0, 32)  # whole
    plan = model_tiling(windowed, 3000, 4000, tile=256, overlap=32)
    assert plan == Tiling(640, 160, 54, 32)  # overlap >= 2 * 54 + 32, tile >= 4 * overlap
    tiles = count_tiles(3000, 4000, tile=plan.tile, overlap=plan.overlap, multiple_of=plan.multiple_of)
    assert tiles == 6 * 8


@torch.no_grad()
def test_restore_image_runs_a_small_windowed_photo_whole():
    model = _model("small_window")
    image = _gradient_photo(200, 296)[0]  # one piece, reflection-padded to the window grid (224 x 320)
    whole = model(pad_to_multiple(image[None], model.size_multiple)).image[0, :, :200, :296]
    torch.testing.assert_close(restore_image(model, image, fast=False), whole, rtol=0, atol=1e-6)


@torch.no_grad()
def test_drop_fill_model_tiles_match_the_whole_image(monkeypatch):
    """A windowed drop_fill model: its tiles give the unfilled image and the drop probability, which
    are stitched and filled once, so the tiled restore equals the whole one although the fill reaches
    across the image (a detector that flags spots at random, so that the fill matters)."""
    import mofme.infer.restore as restore

    torch.manual_seed(0)
    model = build_restorer(preset="small_window", drop_fill=True).eval()
    torch.nn.init.normal_(model.drop_head.out.weight, std=3.0)  # a detector that fires somewhere
    torch.nn.init.zeros_(model.drop_head.out.bias)
    assert model.size_multiple == 32 and model.receptive_margin == model.drop_head.receptive_margin == 93
    image = _gradient_photo(352, 480)[0]
    whole = restore_image(model, image, fast=False)  # 352 x 480 runs in one piece
    probability = torch.sigmoid(model(image[None], fill=False).drop_logits)
    assert float(probability.max()) > 0.5 > float(probability.min())
    plan = Tiling(tile=320, overlap=224, margin=model.receptive_margin, multiple_of=32)  # 2 x 3 tiles
    monkeypatch.setattr(restore, "model_tiling", lambda *args, **kwargs: plan)
    tiled = restore_image(model, image, fast=False)
    assert float((whole - tiled).abs().max()) <= LEVEL
    unfilled = model(image[None], fill=False).image[0]
    assert float((whole - unfilled).abs().max()) > 10 * LEVEL  # the fill changed the image


@torch.no_grad()
def test_gated_context_model_tiles_share_the_whole_images_context(monkeypatch):
    """A windowed model with a presence gate and a global context: tiled inference passes every tile
    the whole image's descriptor, so it equals the whole restore; tiles that each used their own
    descriptor would not."""
    import mofme.infer.restore as restore

    torch.manual_seed(0)
    model = build_restorer(preset="tiny", window_size=8, presence_gate=True, global_context=True).eval()
    torch.nn.init.normal_(model.context_bias.weight, std=5.0)  # a context that matters
    torch.nn.init.normal_(model.context_gate.weight, std=5.0)  # to the gate too
    torch.nn.init.normal_(model.presence_head.out.weight, std=3.0)  # a gate that varies
    assert model.size_multiple == 32 and model.receptive_margin == model.presence_head.receptive_margin == 93
    image = _gradient_photo(352, 480)[0]
    whole = restore_image(model, image, fast=False)
    assert float((restore_image(model, image, fast=True) - whole).abs().max()) <= LEVEL  # the CPU fast path
    plan = Tiling(tile=320, overlap=224, margin=model.receptive_margin, multiple_of=32)  # 2 x 3 tiles
    monkeypatch.setattr(restore, "model_tiling", lambda *args, **kwargs: plan)
    tiled = restore_image(model, image, fast=False)
    assert float((whole - tiled).abs().max()) <= LEVEL
    own = tiled_apply(lambda tiles: model(tiles).image, image, **plan._asdict(), batch_size=1)
    assert float((whole - own).abs().max()) > 2 * LEVEL  # each tile's own context: seams
