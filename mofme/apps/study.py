"""``mofme study``: dense vs MoE vs MoFME (linear router) vs MoFME (UaR) at an equal budget.

Protocol (written into the report): the demo recipe (built-in benchmark, small preset) for every
variant; the same number of optimiser steps for all (1,024 by default; optionally fitted so that
the slowest variant takes about ``minutes_per_run`` on this machine), the same data order and
initial seed per seed; model selection on the validation photo; evaluation on the held-out test
photos. The summary, report and figures are written by :mod:`mofme.apps.study_report`: mean +- std
over seeds of PSNR/SSIM per weather type and overall, parameters, forward latency, and the
routing analysis (expert usage per weather type, NMI between weather type and expert per layer,
how often UaR's MC selection differs from its deterministic one).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mofme.apps.analysis import expert_counts, expert_usage, routing_nmi, uar_selection_change
from mofme.apps.plots import routing_heatmaps
from mofme.apps.study_report import write_study
from mofme.benchmarks.timing import machine, time_side_by_side
from mofme.configs import recipe_path
from mofme.data import WEATHER_TYPES, BuiltinWeatherDataset
from mofme.engine.config import Config, load_config
from mofme.engine.data import build_datasets
from mofme.engine.evaluate import evaluate
from mofme.engine.optim import adamw
from mofme.engine.trainer import train
from mofme.models import Restorer, load_restorer
from mofme.nn import aux_loss

__all__ = ["STUDY_VARIANTS", "StudyResult", "run_study"]

RECIPE = "demo_cpu"
DEFAULT_STEPS = 1024  # a step count, not a time: the study gives the same figures on every machine
STUDY_VARIANTS: dict[str, list[str]] = {
    "dense": ["model.ffn=dense"],
    "moe": ["model.ffn=moe", "model.router=linear"],
    "mofme": ["model.ffn=mofme", "model.router=linear"],
    "mofme-uar": ["model.ffn=mofme", "model.router=uar"],
    "mofme-lowrank": ["model.ffn=mofme", "model.router=linear", "model.modulation=lowrank"],
}


@dataclass
class StudyResult:
    output_dir: Path
    summary: dict
    runs: list[dict] = field(default_factory=list)


def _config(variant: str, seed: int, output: Path, overrides: list[str], epochs: int) -> Config:
    return load_config(
        recipe_path(RECIPE),
        [
            *STUDY_VARIANTS[variant],
            f"train.seed={seed}",
            f"train.output_dir={output}",
            f"train.epochs={epochs}",
            "train.max_minutes=null",
            "train.progress=false",
            *overrides,
        ],
    )


def _seconds_per_step(config: Config, steps: int = 6) -> float:
    """Median training-step time (forward, backward, AdamW) of ``config``'s model on its batches."""
    torch.manual_seed(0)
    model = config.model.build().train()
    optimizer = adamw(model.parameters(), lr=1e-6)
    train_set, _ = build_datasets(config.data, seed=0)
    batch = torch.stack([train_set[i]["input"] for i in range(config.data.batch_size)])

    def step() -> None:
        out = model(batch)
        (out.image.mean() + aux_loss(model)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return time_side_by_side({"step": step}, warmup=2, repeats=steps, device=torch.device("cpu"))["step"]


def _train_and_score(
    config: Config, test: BuiltinWeatherDataset, *, variant: str, seed: int
) -> tuple[dict, Restorer]:
    """Train one variant for one seed; its test metrics and routing analysis, and the best model."""
    run_dir = Path(config.train.output_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    result = train(config)
    model = load_restorer(result.best_dir)
    report = evaluate(model, test, **config.eval.model_dump(), progress=False)
    metrics = {w: g.to_dict() for w, g in report.per_weather.items()}
    metrics["mean"] = report.mean_over_weather.to_dict()
    routed = config.model.resolved().ffn != "dense"
    counts = expert_counts(model, test) if routed else None
    run = {
        "variant": variant,
        "seed": seed,
        "steps": result.steps,
        "params": sum(p.numel() for p in model.parameters()),
        "metrics": metrics,
        "nmi": routing_nmi(counts) if routed else [],
        "uar_change": uar_selection_change(model, test, seed=seed) if routed else [],
        "expert_counts": counts.tolist() if routed else None,
        "images": [{"name": r.name, "weather": r.weather, "psnr": r.psnr} for r in report.images],
    }
    return run, model


def _latency_ms(models: dict[str, Restorer], image: torch.Tensor) -> dict[str, float]:
    """Forward latency of each model on ``image`` (1, 3, H, W), median of 5, timed side by side."""

    def forward(model: Restorer):
        def run() -> None:
            with torch.no_grad():
                model(image)

        return run

    latency = time_side_by_side(
        {v: forward(m) for v, m in models.items()}, warmup=1, repeats=5, device=torch.device("cpu")
    )
    return {variant: seconds * 1e3 for variant, seconds in latency.items()}


def _steps(probe: dict[str, Config], steps: int | None, minutes_per_run: float) -> tuple[int, int]:
    """(steps, epochs): ``steps`` rounded up to whole epochs; without it, fitted so that the slowest
    variant takes about ``minutes_per_run`` on this machine (then the result depends on its speed)."""
    data = next(iter(probe.values())).data
    steps_per_epoch = data.samples_per_epoch // data.batch_size
    if steps is None:
        slowest = max(_seconds_per_step(config) for config in probe.values())
        steps = int(60 * minutes_per_run * 0.9 / slowest)
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    return epochs * steps_per_epoch, epochs


def _protocol(*, command: str, started: float, steps: int, seeds: int, image: torch.Tensor) -> dict:
    host = machine()
    return {
        "command": command,
        "machine": f"{host['processor']}, {host['cpu_threads']} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "minutes": (time.monotonic() - started) / 60,
        "steps": steps,
        "seeds": seeds,
        "text": (
            f"recipe `{RECIPE}` (small preset, built-in benchmark) for every variant; {steps} optimiser steps each, "
            f"seeds 0..{seeds - 1} (same data order and seed for every variant); "
            "best checkpoint on the validation photo; test photos never seen in training or selection; "
            f"latency: forward of one {tuple(image.shape[-2:])} test image, median of 5, side by side."
        ),
    }


def run_study(
    output: str | Path = "mofme-study",
    *,
    steps: int | None = DEFAULT_STEPS,
    minutes_per_run: float = 4.0,
    seeds: int = 3,
    variants: list[str] | None = None,
    overrides: list[str] | None = None,
    command: str = "mofme study",
) -> StudyResult:
    """Train and evaluate every variant for every seed for ``steps`` optimiser steps (``None``: fit
    them to ``minutes_per_run``); write ``report.md``, ``study.json`` and the figures."""
    started = time.monotonic()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    variants = variants or list(STUDY_VARIANTS)
    overrides = overrides or []
    probe = {v: _config(v, 0, output / "probe", overrides, 1) for v in variants}
    steps, epochs = _steps(probe, steps, minutes_per_run)
    print(
        f"[mofme study] {len(variants)} variants x {seeds} seeds, {steps} steps each ({epochs} epochs)",
        flush=True,
    )
    test = BuiltinWeatherDataset("test")
    runs, models = [], {}
    for seed in range(seeds):
        for variant in variants:
            config = _config(variant, seed, output / "runs" / f"{variant}-seed{seed}", overrides, epochs)
            run, model = _train_and_score(config, test, variant=variant, seed=seed)
            runs.append(run)
            if seed == 0:
                models[variant] = model
                if run["expert_counts"] is not None:
                    usage = expert_usage(np.asarray(run["expert_counts"]))
                    routing_heatmaps(usage, WEATHER_TYPES, output / f"routing_{variant}.png")
            print(
                f"[mofme study] {variant} seed {seed}: mean PSNR {run['metrics']['mean']['psnr']:.2f} dB",
                flush=True,
            )
    image = test[0]["input"].unsqueeze(0)
    latency = _latency_ms(models, image)
    for run in runs:
        run["latency_ms"] = latency[run["variant"]]
    protocol = _protocol(command=command, started=started, steps=steps, seeds=seeds, image=image)
    summary = write_study(output, protocol=protocol, runs=runs, variants=variants)
    print((output / "report.md").read_text())
    return StudyResult(output, summary, runs)
