"""Fitting a calibrated restorer's strength on proposals computed once (mofme.train.strength): the
exact per-render MSE from three sums, what is collected, and a fit that closes on clean renders and
opens where the base is right."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from mofme.configs import recipe_path
from mofme.models import build_restorer, create_model
from mofme.models.strength import (
    EVIDENCE_FEATURES,
    HeadEvidence,
    correction_evidence,
    dark_channel_quantiles,
    low_band,
)
from mofme.train.config import Config, load_config
from mofme.train.strength import (
    SUMS,
    Proposals,
    collect_proposals,
    fit_from_config,
    fit_strength,
    proposal_mse,
    proposal_sums,
)
from mofme.train.trainer import initialised_model
from tests.standin import astronaut


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


def _one_band(change: torch.Tensor, cross: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """(N, 6) sums of renders whose whole correction is in the high band: |c|^2, <c, e>, |e|^2."""
    zero = torch.zeros_like(change)
    return torch.stack([zero, zero, change, zero, cross, error], 1)


def test_proposal_mse_is_the_mse_of_the_banded_correction_for_any_strengths():
    x, r, y = (_rand(5, 3, 24, 28, seed=s) for s in (1, 2, 3))
    sums = proposal_sums(x, r, y, sigma=2.0)
    assert sums.shape == (5, len(SUMS))
    low = gaussian_blur((r - x).double(), kernel_size=13, sigma=2.0)  # the low band, independently
    for s_low, s_high in ((0.0, 0.0), (0.3, 0.3), (1.0, 1.0), (1.7, 0.4), (0.2, 0.9)):
        output = x.double() + s_low * low + s_high * ((r - x).double() - low)
        direct = (output - y.double()).square().flatten(1).mean(1)
        both = torch.tensor([[s_low, s_high]]).expand(5, 2)
        torch.testing.assert_close(proposal_mse(both, sums), direct, rtol=1e-6, atol=1e-9)
        if s_low == s_high:  # one strength for the whole correction
            torch.testing.assert_close(
                proposal_mse(torch.full((5,), s_low), sums), direct, rtol=1e-6, atol=1e-9
            )


def test_collect_proposals_keeps_the_evidence_and_sums_of_the_bases_output(model):
    items = [
        {"input": _rand(3, 24, 32, seed=10 + i), "target": _rand(3, 24, 32, seed=20 + i)} for i in range(5)
    ]
    proposals = collect_proposals(model, items, renders=7, batch_size=3, progress=False)  # wraps round
    assert proposals.features.shape == (7, EVIDENCE_FEATURES) and proposals.sums.shape == (7, 6)
    assert proposals.pair is None  # the head reads no pair
    x = torch.stack([it["input"] for it in items])
    y = torch.stack([it["target"] for it in items])
    with torch.no_grad():
        r = model.base(x).image.clamp(0, 1)
    torch.testing.assert_close(proposals.features[:5], correction_evidence(x, r), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(proposals.features[5:], proposals.features[:2])  # the same items again
    expected = (y - x).double().square().flatten(1).mean(1)
    torch.testing.assert_close(proposals.sums[:5, 5], expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(proposals.sums[:5], proposal_sums(x, r, y, sigma=4.0), rtol=1e-6, atol=1e-9)


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
    sums = _one_band(change, torch.where(clean, 0.0, change), torch.where(clean, 0.0, change))
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
    sums = _one_band(change, torch.where(clean, 0.0, change / 0.4), torch.where(clean, 0.0, change / 0.16))
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
    assert _cached_proposals(path, EVIDENCE_FEATURES, pair=False) is None  # nothing kept yet
    kept = Proposals(torch.rand(5, EVIDENCE_FEATURES), torch.rand(5, 6, dtype=torch.float64))
    torch.save(kept._asdict(), path)
    torch.testing.assert_close(_cached_proposals(path, EVIDENCE_FEATURES, pair=False).features, kept.features)
    assert _cached_proposals(path, EVIDENCE_FEATURES + 2, pair=False) is None  # a head with the haze evidence
    assert _cached_proposals(path, EVIDENCE_FEATURES, pair=True) is None  # a head that reads the pair
    torch.save(kept._replace(sums=kept.sums[:, :3])._asdict(), path)
    assert _cached_proposals(path, EVIDENCE_FEATURES, pair=False) is None  # kept before the bands


def test_a_two_band_fit_finds_the_least_squares_strength_of_each_band(model):
    """A correction that removes 40% of the error's low frequencies and adds noise in the high ones,
    on copies of one photograph: a two-band head with ``max_strength`` 4 amplifies the low band to
    its least-squares strength and holds the high band back to its own (the oracle's, solved apart)."""
    from mofme.benchmarks.strength_oracle import oracle_strengths

    clean = astronaut(48)
    hazy = 0.6 * clean + 0.4 * 0.9
    noise = 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(8))
    restored = hazy + 0.4 * low_band(clean - hazy, 4.0) + (noise - low_band(noise, 4.0))
    _, s_low, s_high = oracle_strengths(hazy, restored, clean, sigma=4.0)
    assert s_low > 2.0 and s_high < 0.5  # amplify the low band, hold the high one back
    x, r, y = (image.expand(8, -1, -1, -1) for image in (hazy, restored, clean))
    banded = create_model("restorer_calibrated", base=model.config.base, bands=2, max_strength=4.0).eval()
    features = 0.3 * torch.randn(8, EVIDENCE_FEATURES, generator=torch.Generator().manual_seed(9))
    fit_strength(banded, Proposals(features, proposal_sums(x, r, y, sigma=4.0)), iterations=1500)
    with torch.no_grad():
        strength = banded.strength.to_strength(banded.strength.logits(features))
    assert (
        float((strength[:, 0] - s_low).abs().max()) < 0.15
    )  # the logit penalty pulls towards s = 2 a little
    assert float((strength[:, 1] - s_high).abs().max()) < 0.05


def test_a_batched_fit_learns_from_the_pair_what_the_statistics_do_not_tell(model):
    """Half the renders need their correction (s = 1), half are clean (s = 0); the statistics are the
    same noise for both, and only the layout of the correction tells them apart (vertical streaks or
    a smooth ramp): a head with a pair encoder, fitted in batches, learns it."""
    n, generator = 96, torch.Generator().manual_seed(10)
    features = 0.3 * torch.randn(n, EVIDENCE_FEATURES, generator=generator)
    rainy = torch.arange(n) % 2 == 1
    pair = torch.rand(n, 6, 16, 16, generator=generator) - 0.5
    streaks = (torch.arange(16) % 4 == 0).float().expand(16, 16)
    ramp = torch.linspace(-1, 1, 16)[:, None].expand(16, 16)
    pair[:, 3:] = torch.where(rainy[:, None, None, None], streaks, ramp) + 0.1 * pair[:, 3:]
    change = 0.01 + 0.02 * torch.rand(n, generator=generator, dtype=torch.float64)
    sums = _one_band(change, torch.where(rainy, change, 0.0), torch.where(rainy, change, 0.0))
    paired = create_model("restorer_calibrated", base=model.config.base, pair_width=4).eval()
    proposals = Proposals(features, sums, pair.half())
    fit_strength(paired, proposals, iterations=400, batch_size=32, lr=1e-2)
    with torch.no_grad():
        strength = paired.strength.to_strength(paired.strength.logits(HeadEvidence(features, pair)))[:, 0]
    assert float(strength[~rainy].max()) < 0.2 and float(strength[rainy].min()) > 0.8


def test_kept_proposals_are_named_by_what_they_depend_on():
    """Another family list, photo folder or base: another file; the head's own settings (its cap,
    its pair encoder) and the output folder: the same one (the evidence check covers the head)."""
    from mofme.configs import recipe_path
    from mofme.train.config import load_config
    from mofme.train.strength import proposals_name

    def name(*overrides: str, sigma: float = 4.0) -> str:
        config = load_config(recipe_path("weather_strength_pair"), list(overrides))
        return proposals_name(config, renders=1536, sigma=sigma)

    reference = name()
    assert reference.startswith("proposals_1536_seed2032_sigma4_") and reference.endswith(".pt")
    assert name("loss.psnr_cap=50", "model.pair_width=8", "train.output_dir=elsewhere") == reference
    changed = [
        name("data.families=[rain-classic,snow-classic,haze-classic,raindrop-classic]"),
        name("data.folders=[{path: other/photos, weight: 1.0}]"),
        name("model.base=mofme-small-weather"),
        name("train.init_parts={base: runs/other/best}"),
        name("train.seed=7"),
        name(sigma=2.0),
    ]
    assert reference not in changed and len(set(changed)) == len(changed)
