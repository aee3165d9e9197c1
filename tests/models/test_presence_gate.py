"""Issue 28, do no harm: the weather-presence gate (``presence_gate``) and the whole-image context
(``global_context``) of the Restorer, against the explicit formula, and their training target."""

from __future__ import annotations

import pytest
import torch

from mofme.losses import presence_targets
from mofme.models import build_restorer
from mofme.models.context import ImageContext


def _gated(**fields):
    torch.manual_seed(0)
    model = build_restorer(preset="tiny", presence_gate=True, residual=True, **fields).eval()
    with torch.no_grad():  # a gate that varies over the image, not the prior everywhere
        torch.nn.init.normal_(model.presence_head.out.weight, std=10.0)
        model.presence_head.out.bias.zero_()
    return model


def _set_gate(model, bias: float) -> None:
    with torch.no_grad():
        model.presence_head.out.weight.zero_()
        model.presence_head.out.bias.fill_(bias)


@torch.no_grad()
def test_output_is_the_input_plus_the_gated_correction():
    model = _gated()
    image = torch.rand(2, 3, 36, 52, generator=torch.Generator().manual_seed(1))
    out = model(image)
    gate = torch.sigmoid(out.presence_logits)
    assert out.presence_logits.shape == (2, 1, 36, 52)
    assert float(gate.max()) - float(gate.min()) > 0.5  # a gate that varies over the image
    _set_gate(model, 40.0)  # gate open everywhere: the ungated restoration
    restored = model(image).image
    assert float((restored - image).abs().max()) > 1e-2  # the network does change the image
    torch.testing.assert_close(out.image, image + gate * (restored - image), rtol=0, atol=1e-6)


@torch.no_grad()
def test_a_closed_gate_returns_the_input_whatever_the_network_does():
    model = _gated()
    _set_gate(model, -40.0)
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(image).image, image, rtol=0, atol=1e-6)


def test_presence_targets_mark_what_the_weather_changed_dilated():
    clean = torch.full((1, 3, 16, 16), 0.5)
    degraded = clean.clone()
    degraded[0, 1, 8, 5] += 3 / 255  # above the 2/255 threshold, in one channel
    degraded[0, 0, 2, 12] += 1 / 255  # below it
    target = presence_targets(degraded, clean)
    expected = torch.zeros(1, 1, 16, 16)
    expected[0, 0, 6:11, 3:8] = 1  # the 5 x 5 square around (8, 5)
    assert torch.equal(target, expected)
    assert torch.equal(presence_targets(degraded, clean, dilation=0).sum(), torch.tensor(1.0))
    assert presence_targets(clean, clean).sum() == 0  # a clean crop: no weather anywhere
    with pytest.raises(ValueError, match="must be equal"):
        presence_targets(degraded, clean[..., :8])


@torch.no_grad()
def test_the_context_is_the_thumbnails_pooled_features():
    context = ImageContext(widths=(4, 8), size=32).eval()
    image = torch.rand(1, 3, 48, 96, generator=torch.Generator().manual_seed(3))
    thumbnail = torch.nn.functional.avg_pool2d(image, 3)  # 96 -> 32 on the long side: 3 x 3 means
    torch.testing.assert_close(context.thumbnail(image), thumbnail, rtol=0, atol=1e-6)
    expected = context.features(thumbnail * 2 - 1).mean(dim=(-2, -1))
    torch.testing.assert_close(context(image), expected, rtol=0, atol=1e-6)
    small = image[..., :16, :24]
    assert context.thumbnail(small) is small  # never enlarged


@torch.no_grad()
def test_a_given_context_replaces_the_images_own():
    model = _gated(global_context=True)
    with torch.no_grad():
        torch.nn.init.normal_(model.context_bias.weight, std=0.5)
        torch.nn.init.normal_(model.context_gate.weight, std=0.5)
    image = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    other = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(5))
    own = model(image)
    given = model(image, context=model.image_context(image))
    torch.testing.assert_close(given.image, own.image, rtol=0, atol=0)
    foreign = model(image, context=model.image_context(other))
    assert float((foreign.image - own.image).abs().max()) > 1e-3  # the context matters
    assert float((foreign.presence_logits - own.presence_logits).abs().max()) > 1e-3  # to the gate too
    with pytest.raises(ValueError, match=r"context must be \(N=1, 64\)"):
        model(image, context=torch.zeros(2, 64))
    with pytest.raises(ValueError, match="without global_context"):
        _gated()(image, context=torch.zeros(1, 64))


def test_new_heads_start_as_the_model_they_extend():
    """A gate and context added to a trained model leave it close to what it was: the context's bias
    starts at zero and the gate opens to its prior everywhere."""
    torch.manual_seed(0)
    base = build_restorer(preset="tiny", residual=True).eval()
    extended = build_restorer(preset="tiny", residual=True, presence_gate=True, global_context=True).eval()
    missing = extended.load_state_dict(base.state_dict(), strict=False).missing_keys
    assert {key.split(".")[0] for key in missing} == {
        "presence_head",
        "context",
        "context_bias",
        "context_gate",
    }
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        before, after = base(image).image, extended(image).image
        gate = torch.sigmoid(extended(image).presence_logits)
    torch.testing.assert_close(gate, torch.full_like(gate, 0.9), rtol=0, atol=1e-6)
    torch.testing.assert_close(after, image + 0.9 * (before - image), rtol=0, atol=1e-6)


@torch.no_grad()
def test_a_closed_gate_also_stops_the_drop_fill():
    """The fill is weighted by the gate (fill_probability): a detector firing everywhere fills nothing
    where the gate sees no weather, and fills as before where it is open."""
    from mofme.models.restorer import fill_drops, fill_probability

    model = _gated(drop_fill=True)
    with torch.no_grad():
        torch.nn.init.normal_(model.drop_head.out.weight, std=3.0)  # a detector that fires somewhere
        model.drop_head.out.bias.zero_()
    image = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(7))
    out = model(image, fill=False)
    assert float(torch.sigmoid(out.drop_logits).max()) > 0.5
    torch.testing.assert_close(
        fill_probability(out), torch.sigmoid(out.drop_logits) * torch.sigmoid(out.presence_logits)
    )
    torch.testing.assert_close(model(image).image, fill_drops(out.image, fill_probability(out)))
    _set_gate(model, -40.0)
    torch.testing.assert_close(model(image).image, image, rtol=0, atol=1e-6)  # nothing filled
    _set_gate(model, 40.0)
    filled = model(image).image
    unfilled = model(image, fill=False).image
    assert float((filled - unfilled).abs().max()) > 1e-2  # the open gate lets the fill act
