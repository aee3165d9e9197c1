"""Fit a calibrated restorer's strength on proposals computed once.

The base of a :class:`~mofme.models.CalibratedRestorer` is fixed, so its output r for each training
render x (clean target y) needs computing only once: that is the expensive part. Everything the
strength's loss needs is then, per render, what the head reads (:class:`Proposals`) and six means,
since for the output x + s_low L + s_high H (c = r - x, L its low band, H = c - L, e = y - x)

    mse = (|e|^2 - 2 s_low <L, e> - 2 s_high <H, e> + s_low^2 |L|^2 + 2 s_low s_high <L, H>
           + s_high^2 |H|^2) / n                     (exact for any strengths; one strength: s_low = s_high)

and the head is optimised for many iterations on minus the mean capped PSNR
(:class:`~mofme.losses.RestorationLoss`'s ``pixel="psnr"``): full-batch (a head on the evidence
statistics, 923 parameters) or in batches of :data:`PAIR_BATCH` (a head with a pair encoder), where
stochastic training through the trainer gets a few hundred noisy steps for the same renders.

    proposals = collect_proposals(model, train_set, renders=800)      # the base runs 800 times
    history = fit_strength(model, proposals, iterations=1500)           # seconds
    mofme train configs/weather_strength.yaml --fit-strength 800        # the same from a recipe
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mofme.atomic import atomic_file, write_text_atomic
from mofme.models.strength import CalibratedRestorer, HeadEvidence, evidence_features, low_band
from mofme.train.config import Config

__all__ = [
    "PAIR_BATCH",
    "SUMS",
    "Proposals",
    "collect_proposals",
    "fit_from_config",
    "fit_strength",
    "proposal_mse",
    "proposal_sums",
    "proposals_name",
]


class Proposals(NamedTuple):
    """``features`` (N, F) float32: the evidence the strength head reads
    (:func:`~mofme.models.strength.correction_evidence`) of each render and the base's output;
    ``sums`` (N, 6) float64: with c = r - x, L its low band, H = c - L and e = y - x, the means over
    the pixels of L L, L H, H H, L e, H e and e e (:data:`SUMS`); ``pair`` (N, 6, h, w) float16, for a
    head with a pair encoder (:func:`~mofme.models.strength.correction_pair`), else None."""

    features: Tensor
    sums: Tensor
    pair: Tensor | None = None


PAIR_BATCH = 64  # renders per iteration of a fit whose head reads the pair (full-batch otherwise)
SUMS = ("low_low", "low_high", "high_high", "low_error", "high_error", "error_error")


def proposal_mse(strength: Tensor, sums: Tensor) -> Tensor:
    """(N,) MSE of x + s_low L + s_high H against y for strengths ``strength`` (N, 2), or one
    strength per render (N,) or (N, 1) for both bands, from ``sums`` (N, 6) (:class:`Proposals`)."""
    strength = strength.double()
    strength = strength[:, None] if strength.dim() == 1 else strength
    low, high = strength[:, 0], strength[:, -1]
    ll, lh, hh, le, he, ee = sums.unbind(1)
    mse = ee - 2 * (low * le + high * he) + low.square() * ll + 2 * low * high * lh + high.square() * hh
    return mse.clamp_min(0.0)


def proposal_sums(image: Tensor, restored: Tensor, target: Tensor, *, sigma: float) -> Tensor:
    """(N, 6) float64 :class:`Proposals` ``sums`` of (N, 3, H, W) batches, the low band of ``sigma``
    px at the working size (:func:`~mofme.models.strength.low_band`)."""
    change = (restored - image).double()
    low = low_band(change, sigma)
    high, error = change - low, (target - image).double()
    pairs = ((low, low), (low, high), (high, high), (low, error), (high, error), (error, error))  # SUMS
    return torch.stack([(a * b).flatten(1).mean(1) for a, b in pairs], 1)


def _epochs(dataset: Dataset, renders: int):
    """``renders`` items of ``dataset``, calling its ``set_epoch`` each pass (fresh renders)."""
    for index in range(renders):
        epoch, position = divmod(index, len(dataset))
        if position == 0 and hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        yield dataset[position]


@torch.no_grad()
def collect_proposals(
    model: CalibratedRestorer, dataset: Dataset, *, renders: int, batch_size: int = 4, progress: bool = True
) -> Proposals:
    """Run ``model.base`` (eval mode) on ``renders`` items of ``dataset`` (dicts with ``input`` and
    ``target`` (3, H, W), equal sizes within a batch) and keep what :func:`fit_strength` needs."""
    was_training = model.base.training
    model.base.eval()
    parts: list[Proposals] = []
    batch: list[dict] = []
    for item in tqdm(_epochs(dataset, renders), total=renders, desc="proposals", disable=not progress):
        batch.append(item)
        if len(batch) == batch_size:
            parts.append(_proposals(model, batch))
            batch = []
    if batch:
        parts.append(_proposals(model, batch))
    model.base.train(was_training)
    pairs = None if parts[0].pair is None else torch.cat([p.pair for p in parts])
    return Proposals(torch.cat([p.features for p in parts]), torch.cat([p.sums for p in parts]), pairs)


def _proposals(model: CalibratedRestorer, batch: list[dict]) -> Proposals:
    x = torch.stack([item["input"] for item in batch]).float()
    y = torch.stack([item["target"] for item in batch]).float()
    r = model.base(x).image.float().clamp(0, 1)
    features, pair = model.strength.evidence(x, r)
    sums = proposal_sums(x, r, y, sigma=model.config.band_sigma)
    return Proposals(features, sums, None if pair is None else pair.half())


def fit_strength(
    model: CalibratedRestorer,
    proposals: Proposals,
    *,
    iterations: int = 1500,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    psnr_cap: float = 50.0,
    logit_decay: float = 1e-3,
    batch_size: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Optimise ``model.strength`` (AdamW) on minus the mean PSNR of the proposals, each capped at
    ``psnr_cap`` dB, plus ``logit_decay`` x the mean squared logit (a render whose logit saturated
    early, s = 1.000 on a clean photo, otherwise gets no gradient back: seen on 2 of 6 seeds of the
    test's fit). Full-batch, or ``batch_size`` renders drawn at random each iteration (a head with a pair
    encoder; every other batch mirrored left to right). Returns the loss every 100 iterations and at
    the end (``progress``: a progress bar showing it). The head is left in eval mode (its
    standardisations' running statistics those of the proposals)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = model.strength.train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    floor = 10.0 ** (-psnr_cap / 10.0)
    history = []
    bar = tqdm(range(iterations), desc="strength", disable=not progress)
    for iteration in bar:
        batch = _batch(proposals, batch_size, generator, mirror=iteration % 2 == 1)
        logits = head.logits(HeadEvidence(batch.features, batch.pair))
        mse = proposal_mse(head.to_strength(logits), batch.sums)
        loss = (10.0 * torch.log10(mse + floor)).mean() + logit_decay * logits.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if iteration % 100 == 0 or iteration == iterations - 1:
            history.append(float(loss.detach()))
            bar.set_postfix(loss=f"{history[-1]:.3f}")
    head.eval()
    if not all(math.isfinite(value) for value in history):
        raise FloatingPointError(f"the strength's loss diverged: {history}")
    return history


def _batch(
    proposals: Proposals, batch_size: int | None, generator: torch.Generator, *, mirror: bool
) -> Proposals:
    """All the proposals, or ``batch_size`` of them at random (their pairs mirrored if ``mirror``)."""
    count = len(proposals.sums)
    if batch_size is None or batch_size >= count:
        return proposals
    index = torch.randint(0, count, (batch_size,), generator=generator)
    pair = None if proposals.pair is None else proposals.pair[index].float()
    if pair is not None and mirror:
        pair = pair.flip(-1)
    return Proposals(proposals.features[index], proposals.sums[index], pair)


def _cached_proposals(path: Path, features: int, pair: bool) -> Proposals | None:
    """The proposals kept at ``path`` if there are any and they hold what the head reads: ``features``
    evidence columns, the six band sums, and the pair if ``pair`` (else the base must run again)."""
    if not path.is_file():
        return None
    proposals = Proposals(**torch.load(path, weights_only=True))
    fits = proposals.features.shape[1] == features and proposals.sums.shape[1] == len(SUMS)
    return proposals if fits and (proposals.pair is not None) == pair else None


def proposals_name(config: Config, *, renders: int, sigma: float) -> str:
    """``proposals_<renders>_seed<seed>_sigma<sigma>_<digest>.pt``: the file of the base's work on a
    recipe's training renders. The digest covers what the proposals depend on besides the head: the
    ``data`` section (photos, families, crops), the base (``model.base``, ``train.init_from``,
    ``train.init_parts``); the band sums depend on ``sigma``. The head's own settings are left out:
    :func:`_cached_proposals` checks that the kept evidence is what the head reads."""
    depends = {
        "data": config.data.model_dump(mode="json"),
        "base": config.model.model_dump(mode="json").get("base"),
        "init_from": config.train.init_from,
        "init_parts": config.train.init_parts,
    }
    digest = hashlib.sha1(json.dumps(depends, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"proposals_{renders}_seed{config.train.seed}_sigma{sigma:g}_{digest}.pt"


def fit_from_config(config: Config, *, renders: int, iterations: int = 1500) -> dict:
    """``mofme train RECIPE --fit-strength RENDERS``: the recipe's ``restorer_calibrated`` model, its
    training renders through the fixed base (seed ``train.seed``), the strength fitted full-batch or,
    for a head with a pair encoder, in batches of :data:`PAIR_BATCH` (``optim.lr``,
    ``optim.weight_decay``, ``loss.psnr_cap``), then scored on the recipe's validation set as
    training scores it. Writes ``train.output_dir``/best (the model), ``strength_fit.json``
    (settings, loss history, scores, minutes) and the proposals (:func:`proposals_name`: reused by
    the next fit into the same folder with the same renders, data, base and ``band_sigma``);
    returns the record."""
    from mofme.train.data import build_datasets, validation_set
    from mofme.train.recipes.restoration import validate
    from mofme.train.trainer import initialised_model

    model = initialised_model(config)  # the base's weights: its name or folder, or train.init_parts
    if not isinstance(model, CalibratedRestorer):
        raise ValueError(f"--fit-strength needs a restorer_calibrated model, not {config.model.name!r}")
    start = time.perf_counter()
    output = Path(config.train.output_dir)
    # the base's work, kept (written whole or not at all): a refit costs seconds
    cache = output / proposals_name(config, renders=renders, sigma=model.config.band_sigma)
    head = model.strength
    proposals = _cached_proposals(cache, evidence_features(head.haze_evidence), head.encoder is not None)
    if proposals is None:
        train_set, _ = build_datasets(config.data, seed=config.train.seed)
        proposals = collect_proposals(model, train_set, renders=renders, batch_size=config.data.batch_size)
        with atomic_file(cache) as tmp:
            torch.save(proposals._asdict(), tmp)
    history = fit_strength(
        model,
        proposals,
        iterations=iterations,
        lr=config.optim.lr,
        weight_decay=config.optim.weight_decay,
        psnr_cap=config.loss.psnr_cap,
        batch_size=None if head.encoder is None else PAIR_BATCH,
        seed=config.train.seed,
        progress=True,
    )
    model.save_pretrained(output / "best")
    scores = validate(model, validation_set(config.data, seed=config.train.seed), config)
    record = {
        "renders": renders,
        "iterations": iterations,
        "loss_every_100": history,
        "scores": scores,
        "minutes": (time.perf_counter() - start) / 60,
    }
    write_text_atomic(output / "strength_fit.json", json.dumps(record, indent=2, default=str) + "\n")
    return record
