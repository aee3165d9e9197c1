"""Fit a calibrated restorer's strength on proposals computed once.

The base of a :class:`~mofme.models.CalibratedRestorer` is fixed, so its output r for each training
render x (clean target y) needs computing only once: that is the expensive part. Everything the
strength's loss needs is then, per render, the evidence features (:func:`correction_evidence`) and
three means, since for output x + s (r - x)

    mse(s) = (|y - x|^2 - 2 s <r - x, y - x> + s^2 |r - x|^2) / n      (exact, any s)

and the head (923 parameters) is optimised full-batch for many iterations on minus the
mean capped PSNR (:class:`~mofme.losses.RestorationLoss`'s ``pixel="psnr"``), where stochastic
training through the trainer gets a few hundred noisy steps for the same renders.

    proposals = collect_proposals(model, train_set, renders=800)      # the base runs 800 times
    history = fit_strength(model, proposals, iterations=1500)           # seconds
    mofme train configs/weather_strength.yaml --fit-strength 800        # the same from a recipe
"""

from __future__ import annotations

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
from mofme.models.strength import CalibratedRestorer, evidence_features
from mofme.train.config import Config

__all__ = ["Proposals", "collect_proposals", "fit_from_config", "fit_strength", "proposal_mse"]


class Proposals(NamedTuple):
    """``features`` (N, F) float32: the evidence the strength head reads (``model.strength.evidence``,
    :func:`~mofme.models.strength.correction_evidence`) of each render and the base's output;
    ``sums`` (N, 3) float64: the means of |r - x|^2, <r - x, y - x> and |y - x|^2 over the pixels."""

    features: Tensor
    sums: Tensor


def proposal_mse(strength: Tensor, sums: Tensor) -> Tensor:
    """(N,) MSE of x + s (r - x) against y for strengths ``strength`` (N,), from ``sums`` (N, 3)."""
    strength = strength.double()
    mse = sums[:, 2] - 2 * strength * sums[:, 1] + strength.square() * sums[:, 0]
    return mse.clamp_min(0.0)


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
    return Proposals(torch.cat([p.features for p in parts]), torch.cat([p.sums for p in parts]))


def _proposals(model: CalibratedRestorer, batch: list[dict]) -> Proposals:
    x = torch.stack([item["input"] for item in batch]).float()
    y = torch.stack([item["target"] for item in batch]).float()
    r = model.base(x).image.float().clamp(0, 1)
    change, error = (r - x).flatten(1).double(), (y - x).flatten(1).double()
    sums = torch.stack([change.square().mean(1), (change * error).mean(1), error.square().mean(1)], 1)
    return Proposals(model.strength.evidence(x, r), sums)


def fit_strength(
    model: CalibratedRestorer,
    proposals: Proposals,
    *,
    iterations: int = 1500,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    psnr_cap: float = 50.0,
    logit_decay: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Optimise ``model.strength`` full-batch (AdamW) on minus the mean PSNR of the proposals, each
    capped at ``psnr_cap`` dB, plus ``logit_decay`` x the mean squared logit (a render whose logit
    saturated early, s = 1.000 on a clean photo, otherwise gets no gradient back: seen on 2 of 6 seeds
    of the test's fit); returns the loss every 100 iterations and at the end.
    The head is left in eval mode (its standardisation's running statistics those of the proposals)."""
    torch.manual_seed(seed)
    head = model.strength.train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    floor = 10.0 ** (-psnr_cap / 10.0)
    history = []
    for iteration in range(iterations):
        logits = head.logits(proposals.features)[:, 0]
        loss = (10.0 * torch.log10(proposal_mse(head.to_strength(logits), proposals.sums) + floor)).mean()
        loss = loss + logit_decay * logits.square().mean()  # keeps the sigmoid out of saturation
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if iteration % 100 == 0 or iteration == iterations - 1:
            history.append(float(loss.detach()))
    head.eval()
    if not all(math.isfinite(value) for value in history):
        raise FloatingPointError(f"the strength's loss diverged: {history}")
    return history


def _cached_proposals(path: Path, features: int) -> Proposals | None:
    """The proposals kept at ``path`` if there are any and they hold ``features`` evidence columns
    (a head that reads other evidence needs the base run again)."""
    if not path.is_file():
        return None
    proposals = Proposals(**torch.load(path, weights_only=True))
    return proposals if proposals.features.shape[1] == features else None


def fit_from_config(config: Config, *, renders: int, iterations: int = 1500) -> dict:
    """``mofme train RECIPE --fit-strength RENDERS``: the recipe's ``restorer_calibrated`` model, its
    training renders through the fixed base (seed ``train.seed``), the strength fitted full-batch
    (``optim.lr``, ``optim.weight_decay``, ``loss.psnr_cap``), then scored on the recipe's
    validation set as training scores it. Writes ``train.output_dir``/best (the model),
    ``strength_fit.json`` (settings, loss history, scores, minutes) and ``proposals_<renders>_seed<seed>.pt``
    (reused by the next fit into the same folder with the same renders and seed); returns the record."""
    from mofme.train.data import build_datasets, validation_set
    from mofme.train.recipes.restoration import validate
    from mofme.train.trainer import initialised_model

    model = initialised_model(config)  # the base's weights: its name or folder, or train.init_parts
    if not isinstance(model, CalibratedRestorer):
        raise ValueError(f"--fit-strength needs a restorer_calibrated model, not {config.model.name!r}")
    start = time.perf_counter()
    output = Path(config.train.output_dir)
    # the base's work, kept (written whole or not at all): a refit costs seconds
    cache = output / f"proposals_{renders}_seed{config.train.seed}.pt"
    proposals = _cached_proposals(cache, evidence_features(model.strength.haze_evidence))
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
        seed=config.train.seed,
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
