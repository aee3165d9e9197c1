"""Fitting a calibrated restorer's strength on proposals computed once (mofme.train.strength): the
exact per-render MSE from three sums, what is collected, and a fit that closes on clean renders and
opens where the base is right."""

from __future__ import annotations

import json

import pytest
import torch

from mofme.configs import recipe_path
from mofme.models import build_restorer, create_model
from mofme.models.strength import EVIDENCE_FEATURES, correction_evidence, dark_channel_quantiles
from mofme.train.config import Config, load_config
from mofme.train.strength import Proposals, collect_proposals, fit_from_config, fit_strength, proposal_mse
from mofme.train.trainer import initialised_model


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    base = build_restorer(preset="tiny", residual=True)
    with torch.no_grad():
        for name, parameter in base.named_parameters():
            if name.startswith("tail"):
                parameter.normal_(std=0.3)  # a base that changes images
    directory = base.save_pretrained(tmp_path_factory.mktemp("base"))
    return create_model("restorer_calibrated", base=str(directory)).eval()


def test_proposal_mse_is_the_mse_of_the_scaled_correction_for_any_strength():
    x, r, y = (_rand(5, 3, 8, 9, seed=s) for s in (1, 2, 3))
    change, error = (r - x).flatten(1).double(), (y - x).flatten(1).double()
    sums = torch.stack([change.square().mean(1), (change * error).mean(1), error.square().mean(1)], 1)
    for value in (0.0, 0.3, 1.0, 1.7):
        strength = torch.full((5,), value)
        direct = (x.double() + value * (r - x).double() - y.double()).square().flatten(1).mean(1)
        torch.testing.assert_close(proposal_mse(strength, sums), direct, rtol=1e-6, atol=1e-9)


def test_collect_proposals_keeps_the_evidence_and_sums_of_the_bases_output(model):
    items = [
        {"input": _rand(3, 24, 32, seed=10 + i), "target": _rand(3, 24, 32, seed=20 + i)} for i in range(5)
    ]
    proposals = collect_proposals(model, items, renders=7, batch_size=3, progress=False)  # wraps round
    assert proposals.features.shape == (7, EVIDENCE_FEATURES) and proposals.sums.shape == (7, 3)
    x = torch.stack([it["input"] for it in items])
    y = torch.stack([it["target"] for it in items])
    with torch.no_grad():
        r = model.base(x).image.clamp(0, 1)
    torch.testing.assert_close(proposals.features[:5], correction_evidence(x, r), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(proposals.features[5:], proposals.features[:2])  # the same items again
    expected = (y - x).double().square().flatten(1).mean(1)
    torch.testing.assert_close(proposals.sums[:5, 2], expected, rtol=1e-6, atol=1e-9)


def test_collect_proposals_keeps_the_evidence_the_head_reads(model):
    """A head with the haze evidence gets it in its proposals (the fit and the model agree)."""
    hazy = create_model("restorer_calibrated", base=model.config.base, haze_evidence=True).eval()
    items = [
        {"input": _rand(3, 24, 32, seed=30 + i), "target": _rand(3, 24, 32, seed=40 + i)} for i in range(3)
    ]
    proposals = collect_proposals(hazy, items, renders=3, batch_size=3, progress=False)
    x = torch.stack([it["input"] for it in items])
    assert proposals.features.shape == (3, EVIDENCE_FEATURES + 2)
    torch.testing.assert_close(proposals.features[:, EVIDENCE_FEATURES:], dark_channel_quantiles(x))


def test_the_fit_closes_on_clean_renders_and_opens_where_the_base_is_right(model):
    generator = torch.Generator().manual_seed(4)
    n = 64
    features = 0.3 * torch.randn(n, EVIDENCE_FEATURES, generator=generator)
    clean = torch.arange(n) % 2 == 0
    features[:, 0] += torch.where(clean, -2.0, 2.0)  # one feature tells them apart
    change = 0.01 + 0.02 * torch.rand(n, generator=generator, dtype=torch.float64)
    sums = torch.stack([change, torch.where(clean, 0.0, change), torch.where(clean, 0.0, change)], 1)
    history = fit_strength(model, Proposals(features, sums))
    assert history[-1] < history[0]
    head = model.strength
    with torch.no_grad():
        strength = torch.sigmoid(head.logits(features))[:, 0]
    assert float(strength[clean].max()) < 0.1 and float(strength[~clean].min()) > 0.9
    assert not head.training  # left in eval mode, its standardisation frozen


def test_a_fit_with_room_above_one_finds_the_strength_a_timid_base_needs(model):
    """Renders whose best strength is 2.5 (the base corrected 40% of the error, in the right
    direction) and clean ones: a head with ``max_strength`` 4 learns both, far above the default cap
    of 1."""
    generator = torch.Generator().manual_seed(5)
    n = 64
    features = 0.3 * torch.randn(n, EVIDENCE_FEATURES, generator=generator)
    clean = torch.arange(n) % 2 == 0
    features[:, 0] += torch.where(clean, -2.0, 2.0)
    change = 0.01 + 0.02 * torch.rand(n, generator=generator, dtype=torch.float64)  # |r - x|^2
    # r - x = 0.4 (y - x): <r - x, y - x> = |r - x|^2 / 0.4, |y - x|^2 = |r - x|^2 / 0.16
    sums = torch.stack(
        [change, torch.where(clean, 0.0, change / 0.4), torch.where(clean, 0.0, change / 0.16)], 1
    )
    timid = create_model("restorer_calibrated", base=model.config.base, max_strength=4.0).eval()
    fit_strength(timid, Proposals(features, sums), iterations=3000)
    with torch.no_grad():
        strength = timid.strength.to_strength(timid.strength.logits(features))[:, 0]
    assert float(strength[clean].max()) < 0.1
    assert abs(float(strength[~clean].median()) - 2.5) < 0.1 and float(strength[~clean].min()) > 1.5


def test_fit_from_config_names_the_model_it_cannot_fit(tmp_path):
    config = load_config(recipe_path("demo_cpu"))
    config.train.output_dir = str(tmp_path)
    with pytest.raises(ValueError, match=f"restorer_calibrated.*{config.model.name}"):
        fit_from_config(config, renders=4)
    assert not any(tmp_path.iterdir())  # refused before the base ran or anything was written


def test_the_fits_base_takes_its_weights_from_init_parts(model, tmp_path):
    """A recipe may describe its base's architecture and load the weights as ``train.init_parts``
    (how a recipe names the output of another run): the fit starts from those weights."""
    saved = model.base.save_pretrained(tmp_path / "base")
    base_config = json.loads((saved / "config.json").read_text())
    config = Config.model_validate(
        {
            "model": {"name": "restorer_calibrated", "base": base_config},
            "train": {"init_parts": {"base": str(saved)}, "output_dir": str(tmp_path / "run")},
        }
    )
    expected = model.base.state_dict()
    untrained = config.model.build().base.state_dict()
    assert any(not torch.equal(untrained[name], tensor) for name, tensor in expected.items())
    loaded = initialised_model(config).base.state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(loaded[name], tensor, rtol=0, atol=0, msg=name)


def test_kept_proposals_are_reused_only_by_a_head_that_reads_the_same_evidence(tmp_path):
    from mofme.train.strength import _cached_proposals

    path = tmp_path / "proposals.pt"
    assert _cached_proposals(path, EVIDENCE_FEATURES) is None  # nothing kept yet
    kept = Proposals(torch.rand(5, EVIDENCE_FEATURES), torch.rand(5, 3, dtype=torch.float64))
    torch.save(kept._asdict(), path)
    torch.testing.assert_close(_cached_proposals(path, EVIDENCE_FEATURES).features, kept.features)
    assert _cached_proposals(path, EVIDENCE_FEATURES + 2) is None  # a head with the haze evidence
