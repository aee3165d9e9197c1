"""Paired intervals of the study (mofme.studies.paired) on synthetic scores with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mofme.studies.paired import paired_difference, seeds_for_halfwidth, weather_weights


def _simulate(rng, *, seeds, images, mu, seed_sd, image_sd, noise_sd):
    """(A, B) scores whose paired difference is mu + seed effect + image effect + noise; A and B
    also share a large per-image difficulty that pairing must remove."""
    difficulty = rng.normal(30, 3, size=images)
    b = difficulty + rng.normal(0, 0.3, size=(seeds, images))
    diff = (
        mu
        + rng.normal(0, seed_sd, size=(seeds, 1))
        + rng.normal(0, image_sd, size=(1, images))
        + rng.normal(0, noise_sd, size=(seeds, images))
    )
    return b + diff, b


def _coverage(method, *, trials, seeds, images, **kwargs):
    rng = np.random.default_rng(123)
    hits = 0
    for trial in range(trials):
        a, b = _simulate(rng, seeds=seeds, images=images, mu=0.15, seed_sd=0.1, image_sd=0.2, noise_sd=0.3)
        result = paired_difference(a, b, method=method, seed=trial, **kwargs)
        hits += result.low <= 0.15 <= result.high
    return hits / trials


def test_the_two_way_t_interval_covers_the_true_difference_at_its_level_with_five_seeds():
    coverage = _coverage("t", trials=400, seeds=5, images=40)
    assert 0.91 <= coverage <= 0.985  # 95 % nominal; binomial sd of the estimate 1.1 %


def test_the_two_way_bootstrap_covers_the_true_difference_with_many_seeds():
    coverage = _coverage("bootstrap", trials=150, seeds=12, images=40, replicates=800)
    assert 0.87 <= coverage <= 0.99


def test_a_large_experiment_recovers_the_mean_and_the_width_of_the_known_variance():
    rng = np.random.default_rng(7)
    seeds, images = 40, 400
    a, b = _simulate(rng, seeds=seeds, images=images, mu=0.15, seed_sd=0.1, image_sd=0.2, noise_sd=0.3)
    result = paired_difference(a, b)
    expected_half = 1.96 * np.sqrt(0.1**2 / seeds + 0.2**2 / images + 0.3**2 / (seeds * images))
    assert result.low <= 0.15 <= result.high
    assert result.halfwidth == pytest.approx(expected_half, rel=0.3)
    assert (result.seeds, result.images) == (seeds, images)


def test_one_seed_gives_the_classical_t_interval_over_images():
    rng = np.random.default_rng(3)
    a, b = rng.normal(31, 2, size=25), rng.normal(30.5, 2, size=25)
    result = paired_difference(a, b)
    reference = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert result.mean == pytest.approx(np.mean(a - b))
    assert (result.low, result.high) == pytest.approx((reference.low, reference.high))


def test_weather_weights_give_every_weather_the_same_total():
    weathers = ["rain"] * 6 + ["snow"] * 2 + ["haze"] * 4
    w = weather_weights(weathers)
    assert w.sum() == pytest.approx(1.0)
    for kind in ("rain", "snow", "haze"):
        assert w[np.array(weathers) == kind].sum() == pytest.approx(1 / 3)
    diff = np.array([1.0] * 6 + [4.0] * 2 + [7.0] * 4)  # per-weather means 1, 4, 7
    assert paired_difference(diff, np.zeros(12), weights=w).mean == pytest.approx(4.0)


def test_decisions_in_words():
    rng = np.random.default_rng(0)
    base = rng.normal(30, 1, size=(5, 50))
    better = paired_difference(base + 0.5 + rng.normal(0, 0.05, base.shape), base)
    assert better.low > 0.1 and "A is better" in better.decision(claim=0.1)
    assert "at least 0.1 dB is established" in better.decision(claim=0.1)
    same = paired_difference(base + rng.normal(0, 0.05, base.shape), base)
    assert "no difference established" in same.decision(claim=0.1) and same.high < 0.1
    assert "ruled out" in same.decision(claim=0.1)
    one_seed = paired_difference(base[:1] + 0.5 + rng.normal(0, 0.05, (1, 50)), base[:1])
    assert one_seed.low > 0 and one_seed.decision(claim=0.1).startswith("no decision: one seed")


def test_seeds_for_halfwidth_is_the_fewest_that_reach_it():
    seeds = seeds_for_halfwidth(0.2, 0.1)
    t = stats.t.ppf(0.975, [seeds - 1, seeds - 2])
    assert t[0] * 0.2 / np.sqrt(seeds) <= 0.1 < t[1] * 0.2 / np.sqrt(seeds - 1)
    # a share of the variance that more seeds do not remove asks for more seeds, or none suffice
    assert seeds_for_halfwidth(0.2, 0.1, image_variance=0.03**2) > seeds
    with pytest.raises(ValueError, match="image variance"):
        seeds_for_halfwidth(0.2, 0.1, image_variance=0.06**2)  # 1.96 x 0.06 > 0.1 at any seed count


def test_a_pilot_recovers_the_variance_parts_and_sizes_a_study_that_reaches_the_width():
    truth = dict(mu=0.05, seed_sd=0.15, image_sd=0.2, noise_sd=0.6)
    images = 96  # per-seed sd = sqrt(0.15^2 + 0.6^2 / 96) = 0.163; image variance 0.2^2 / 96
    rng = np.random.default_rng(11)
    big = paired_difference(*_simulate(rng, seeds=400, images=images, **truth))
    assert big.seed_sd == pytest.approx(np.sqrt(0.15**2 + 0.6**2 / images), rel=0.1)
    assert big.image_variance == pytest.approx(0.2**2 / images, rel=0.5)  # from 96 image effects
    pilot = paired_difference(*_simulate(rng, seeds=5, images=images, **truth))
    seeds = seeds_for_halfwidth(pilot.seed_sd, 0.1, image_variance=pilot.image_variance)
    planned = seeds_for_halfwidth(big.seed_sd, 0.1, image_variance=big.image_variance)
    widths = [
        paired_difference(*_simulate(rng, seeds=planned, images=images, **truth)).halfwidth
        for _ in range(200)
    ]
    assert 2 <= seeds <= 100 and 10 <= planned <= 20
    # the planned study reaches +-0.1 dB (two seeds fewer: a median of 0.1006)
    assert 0.08 <= float(np.median(widths)) <= 0.1


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="weights"):
        paired_difference(np.zeros((2, 3)), np.zeros((2, 3)), weights=[1, 1])
    with pytest.raises(ValueError, match="method"):
        paired_difference(np.zeros((2, 3)), np.zeros((2, 3)), method="z")
    with pytest.raises(ValueError, match="seeds, images"):
        paired_difference(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)))
