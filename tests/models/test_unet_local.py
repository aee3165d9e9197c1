"""The seamless U-Net (``mixer="local"``, ``global_context``, ``presence_gate``; preset ``unet_local``):
its reach is bounded by ``receptive_margin``, a tiled restore given the whole image's context equals
the whole-image restore, and a closed presence gate returns the input unchanged."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import mofme.infer.restore as restore
from mofme.infer.restore import Tiling, restore_image
from mofme.infer.tiling import tiled_apply
from mofme.models import UNetConfig, UNetRestorer, build_restorer, create_model
from mofme.models.restorer import PRESENCE_PRIOR

from ..infer.test_seams import LEVEL, _gradient_photo


def _small_model(*, affine_head: bool = False):
    """A 3-level ``unet_local`` with every zero-initialised map randomised, so that the context, the
    gate and the correction (and the gain, with ``affine_head``) all matter."""
    torch.manual_seed(0)
    model = build_restorer(
        preset="unet_local",
        channels=4,
        depths=(1, 1, 2),
        num_heads=(1, 1, 1),
        num_experts=4,
        affine_head=affine_head,
    ).eval()
    for name, param in model.named_parameters():
        if name.startswith(("outro.", "gain.")) or ".film." in name:
            torch.nn.init.normal_(param, std=0.5)
    return model


def test_unet_local_preset_is_bounded_gated_and_contextual():
    model = create_model("restorer_unet_local")
    assert model.config.mixer == "local" and model.context is not None and model.config.presence_gate
    assert model.receptive_margin is not None and model.receptive_margin < 256
    assert create_model("restorer_unet").receptive_margin is None  # channel attention spans the input
    with pytest.raises(ValueError, match="unknown mixer 'swin'"):
        UNetConfig(mixer="swin")


@torch.no_grad()
@pytest.mark.parametrize("affine_head", [False, True])
def test_receptive_margin_bounds_what_a_cut_changes(affine_head):
    """Restore a 256 x 256 image and its centre (cut on the model's grid), both with the whole image's
    context: beyond the margin from the cut the outputs agree; inside it they differ."""
    model = _small_model(affine_head=affine_head)
    margin, cut = model.receptive_margin, 64
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    context = model.image_context(image)
    whole = model(image, context=context).image[..., cut:-cut, cut:-cut]
    part = model(image[..., cut:-cut, cut:-cut], context=context).image
    diff = (whole - part).abs().amax((0, 1))  # (128, 128)
    index = torch.arange(128)
    edge = torch.minimum(index, 127 - index)
    distance = torch.minimum(edge[:, None], edge[None, :])  # pixels to the nearest cut
    assert float(diff[distance >= margin].max()) < 1e-5
    assert int(distance[diff > 1e-4].max()) >= margin // 3  # the cut does reach inwards


@torch.no_grad()
@pytest.mark.parametrize("affine_head", [False, True])
def test_tiles_given_the_whole_images_context_match_the_whole_image(monkeypatch, affine_head):
    model = _small_model(affine_head=affine_head)
    image = _gradient_photo(352, 480)[0]
    whole = restore_image(model, image, fast=False)  # small enough to run in one piece
    torch.testing.assert_close(whole, model(image[None]).image[0], rtol=0, atol=1e-6)
    assert float((restore_image(model, image, fast=True) - whole).abs().max()) <= LEVEL
    margin = model.receptive_margin
    overlap = -(-(2 * margin + 1) // model.size_multiple) * model.size_multiple
    plan = Tiling(tile=4 * overlap, overlap=overlap, margin=margin, multiple_of=model.size_multiple)
    monkeypatch.setattr(restore, "model_tiling", lambda *args, **kwargs: plan)
    tiled = restore_image(model, image, fast=False)
    assert float((whole - tiled).abs().max()) <= LEVEL
    own = tiled_apply(lambda tiles: model(tiles).image, image, **plan._asdict(), batch_size=1)
    assert float((whole - own).abs().max()) > 2 * LEVEL  # each tile's own context: seams


@torch.no_grad()
def test_presence_gate_starts_open_and_when_closed_returns_the_input():
    model = _small_model()
    image = torch.rand(2, 3, 40, 52, generator=torch.Generator().manual_seed(2))
    fresh = build_restorer(preset="unet_local", channels=4, depths=(1, 1, 2), num_heads=(1, 1, 1))
    gate = torch.sigmoid(fresh(image).presence_logits)
    assert gate.shape == (2, 1, 40, 52)
    torch.testing.assert_close(gate, torch.full_like(gate, PRESENCE_PRIOR))
    assert float((model(image).image - image).abs().max()) > 10 * LEVEL  # open: a correction
    model.outro.bias[3] = -60.0  # the gate logit far below every other term: closed everywhere
    torch.testing.assert_close(model(image).image, image, rtol=0, atol=1e-6)


@torch.no_grad()
def test_affine_head_starts_as_the_additive_model_and_applies_gain_times_input_plus_offset():
    """Fresh, the gain is zero: the same weights give the same output with or without the head. Trained
    (randomised), the output is x + sigmoid(g) * (K * x + b), K from the gain conv and b, g from the
    last conv, read off with forward hooks."""
    image = torch.rand(2, 3, 40, 52, generator=torch.Generator().manual_seed(3))
    plain = _small_model()
    affine = UNetRestorer(dataclasses.replace(plain.config, affine_head=True)).eval()
    missing = affine.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["gain.bias", "gain.weight"]
    torch.testing.assert_close(affine(image).image, plain(image).image, rtol=0, atol=0)
    model = _small_model(affine_head=True).train()  # train mode: no clamp to [0, 1]
    heads: dict[str, torch.Tensor] = {}
    for name in ("outro", "gain"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: heads.__setitem__(name, o))
    restored = model(image).image
    assert image.shape[-2] % model.size_multiple == image.shape[-1] % model.size_multiple == 0  # no pad
    gain, offset, gate = heads["gain"], heads["outro"][:, :3] / 2, torch.sigmoid(heads["outro"][:, 3:])
    assert float(gain.abs().mean()) > 0.1  # the gain does take part
    torch.testing.assert_close(restored, image + gate * (gain * image + offset), rtol=1e-5, atol=1e-6)
