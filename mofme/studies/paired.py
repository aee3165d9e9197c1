"""Paired comparisons of two variants trained with the same seeds and scored on the same images.

A study scores variant A and variant B on the same test images after training each with the same
seeds (same initialisation seed, data order and renders). The per-image differences
``d[s, i] = A[s, i] - B[s, i]`` (seeds x images) remove what the two share: the difficulty of each
image and most of what a seed does to both. Two sources of randomness remain, and an interval must
cover both: which seeds were drawn (training noise) and which images (the test sample).

* ``"t"`` (default): the two-way random-effects interval. With d[s, i] = mu + a_s + b_i + e_si
  (seed effect, image effect, residual), the mean squares of a two-way ANOVA estimate the three
  variances, the variance of the weighted mean is sigma_a^2 / S + (sigma_b^2 + sigma_e^2 / S)
  sum_i w_i^2, and the interval is mean +- t_df sqrt(variance) with Satterthwaite's df. Exact
  enough with few seeds (5), where a bootstrap over seeds is too narrow. One seed: images only.
* ``"bootstrap"``: a two-way bootstrap. Each replicate draws S seeds and I images with
  replacement, independently, and takes the weighted mean of ``d`` over the drawn cells; the
  interval is the percentile interval of the replicates (needs many seeds to reach its level).

``weights`` (images,) make the mean any weighted mean of the images, e.g. the study's mean over
weather types, where each weather counts once whatever its number of images
(:func:`weather_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["PairedDifference", "paired_difference", "seeds_for_halfwidth", "weather_weights"]


@dataclass(frozen=True)
class PairedDifference:
    """Mean of A - B and its ``confidence`` interval [low, high]. What :func:`seeds_for_halfwidth`
    needs to size the next study (nan with one seed): ``seed_sd``, the standard deviation of the
    per-seed (weighted) mean difference, and ``image_variance``, the part of the mean's variance
    that comes from the choice of test images and does not shrink with more seeds."""

    mean: float
    low: float
    high: float
    confidence: float
    method: str
    seeds: int
    images: int
    seed_sd: float = float("nan")
    image_variance: float = float("nan")

    @property
    def halfwidth(self) -> float:
        return (self.high - self.low) / 2

    def decision(self, *, claim: float = 0.0, unit: str = "dB") -> str:
        """The decision in words: A better / worse / no difference established; with a positive
        ``claim`` (A beats B by at least ``claim``) also whether the interval supports it. With one
        seed there is none: its interval holds only the choice of test images."""
        if self.seeds == 1:
            return "no decision: one seed, so the interval covers the test images, not seed-to-seed variation"
        level = f"{100 * self.confidence:.0f}%"
        if self.low > 0:
            text = f"A is better than B ({level} interval above 0)"
        elif self.high < 0:
            text = f"A is worse than B ({level} interval below 0)"
        else:
            text = f"no difference established ({level} interval contains 0)"
        if claim > 0:
            if self.high < claim:
                text += f"; a gain of {claim:g} {unit} or more is ruled out"
            elif self.low >= claim:
                text += f"; a gain of at least {claim:g} {unit} is established"
            else:
                text += f"; a gain of {claim:g} {unit} is neither established nor ruled out"
        return text

    def to_dict(self) -> dict:
        return asdict(self)


def weather_weights(weathers: Sequence[str]) -> np.ndarray:
    """(images,) weights that sum to 1 and give every weather type the same total weight."""
    labels = np.asarray(weathers)
    kinds, counts = np.unique(labels, return_counts=True)
    per_kind = dict(zip(kinds.tolist(), counts.tolist(), strict=True))
    return np.array([1.0 / (len(kinds) * per_kind[w]) for w in labels.tolist()])


def _as_matrix(values) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[None]
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"expected scores of shape (seeds, images), got {matrix.shape}")
    return matrix


def paired_difference(
    a,
    b,
    *,
    weights=None,
    confidence: float = 0.95,
    method: str = "t",
    replicates: int = 4000,
    seed: int = 0,
) -> PairedDifference:
    """The weighted mean of A - B over seeds and images, with a ``confidence`` interval (module
    docstring). ``a``, ``b``: (seeds, images) scores (or (images,) for one seed) of the same images
    under the same seeds; ``weights``: (images,) non-negative, default equal."""
    diff = _as_matrix(a) - _as_matrix(b)
    seeds, images = diff.shape
    w = np.full(images, 1.0 / images) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (images,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {images} non-negative values with a positive sum")
    w = w / w.sum()
    per_seed = diff @ w
    mean = float(per_seed.mean())
    tail = (1 - confidence) / 2
    terms = _variance_terms(diff, w) if images > 1 else None
    if method == "t":
        if terms is None:
            raise ValueError("the t-interval needs at least 2 images")
        low, high = _t_interval(mean, terms, tail=tail)
    elif method == "bootstrap":
        low, high = _two_way_bootstrap(diff, w, tail=tail, replicates=replicates, seed=seed)
    else:
        raise ValueError(f"method must be 'bootstrap' or 't', got {method!r}")
    seed_sd, image_variance = float("nan"), float("nan")
    if seeds > 1:
        seed_sd = float(per_seed.std(ddof=1))
        image_variance = float(terms[1][0]) if terms is not None else 0.0
    return PairedDifference(
        mean, float(low), float(high), confidence, method, seeds, images, seed_sd, image_variance
    )


def _variance_terms(diff: np.ndarray, w: np.ndarray) -> list[tuple[float, int]]:
    """(variance, degrees of freedom) of each part of the weighted mean of ``diff`` (S, I) (module
    docstring): seeds, images, residual (one seed: images only); components clamped at 0. Needs
    at least 2 images."""
    seeds, images = diff.shape
    seed_means, image_means, grand = diff.mean(1), diff.mean(0), diff.mean()
    sum_w2 = float(np.sum(w**2))
    ms_image = seeds * np.sum((image_means - grand) ** 2) / (images - 1)
    if seeds == 1:  # the image sample is the only source: the weighted mean's standard error
        terms = [(sum_w2 * ms_image, images - 1)]
    else:
        ms_seed = images * np.sum((seed_means - grand) ** 2) / (seeds - 1)
        resid = diff - seed_means[:, None] - image_means[None, :] + grand
        df_resid = (seeds - 1) * (images - 1)
        ms_resid = np.sum(resid**2) / df_resid
        var_seed = max(ms_seed - ms_resid, 0.0) / images
        var_image = max(ms_image - ms_resid, 0.0) / seeds
        # variance of the mean = var_seed / S + (var_image + ms_resid / S) * sum_w2, as mean squares
        terms = [
            (var_seed / seeds, seeds - 1),
            (var_image * sum_w2, images - 1),
            (ms_resid * sum_w2 / seeds, df_resid),
        ]
    return terms


def _t_interval(mean: float, terms: list[tuple[float, int]], *, tail: float) -> tuple[float, float]:
    """The two-way random-effects t-interval around ``mean`` from its variance ``terms``
    (:func:`_variance_terms`), with Satterthwaite's degrees of freedom."""
    from scipy.stats import t

    variance = sum(v for v, _ in terms)
    if variance <= 0:
        return mean, mean
    df = variance**2 / sum(v**2 / d for v, d in terms if v > 0)
    half = t.ppf(1 - tail, df) * np.sqrt(variance)
    return mean - half, mean + half


def _two_way_bootstrap(
    diff: np.ndarray, w: np.ndarray, *, tail: float, replicates: int, seed: int
) -> tuple[float, float]:
    """Percentile interval of the weighted mean of ``diff`` (S, I) when seeds and images are both
    resampled with replacement: replicate r's mean is sum over drawn (s, i) of w_i d[s, i], divided
    by S times the drawn images' total weight."""
    rng = np.random.default_rng(seed)
    seeds, images = diff.shape
    seed_draws = rng.integers(0, seeds, size=(replicates, seeds))
    image_counts = np.stack(
        [np.bincount(row, minlength=images) for row in rng.integers(0, images, (replicates, images))]
    )
    image_weights = image_counts * w  # (R, I): weight of each image in replicate r
    seed_counts = np.stack([np.bincount(row, minlength=seeds) for row in seed_draws])  # (R, S)
    totals = np.einsum("rs,si,ri->r", seed_counts, diff, image_weights)
    means = totals / (seeds * image_weights.sum(1))
    return np.quantile(means, tail), np.quantile(means, 1 - tail)


def seeds_for_halfwidth(
    seed_sd: float,
    halfwidth: float,
    *,
    image_variance: float = 0.0,
    confidence: float = 0.95,
    most: int = 1000,
) -> int:
    """The fewest seeds S >= 2 whose t-interval of the mean paired difference is at most
    +-``halfwidth``, given the standard deviation ``seed_sd`` of the per-seed mean difference and
    the ``image_variance`` that more seeds do not remove (both e.g. from a pilot run's
    :class:`PairedDifference`): t_{S-1} * sqrt(sd^2 / S + image_variance) <= halfwidth. ValueError
    if more than ``most``."""
    from scipy.stats import t

    for seeds in range(2, most + 1):
        spread = np.sqrt(seed_sd**2 / seeds + image_variance)
        if t.ppf(1 - (1 - confidence) / 2, seeds - 1) * spread <= halfwidth:
            return seeds
    raise ValueError(
        f"more than {most} seeds needed for +-{halfwidth} at sd {seed_sd}, image variance {image_variance}"
    )
