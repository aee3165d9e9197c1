"""``mofme study``: dense vs MoE vs MoFME (linear router) vs MoFME (UaR) at an equal budget.

Protocol (written into the report): the demo recipe (built-in benchmark, small preset; another
with ``recipe``) for every variant; the same number of optimiser steps for all (1,024 by default; optionally fitted so that
the slowest variant takes about ``minutes_per_run`` on this machine), the same data order and
initial seed per seed; model selection on the validation photo; evaluation on the held-out test
photos. The summary, report and figures are written by :mod:`mofme.studies.study_report`: mean +- std
over seeds of PSNR/SSIM per weather type and overall, parameters, forward latency, and the
routing analysis (expert usage per weather type, NMI between weather type and expert per layer,
how often UaR's MC selection differs from its deterministic one).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from mofme.apps.plots import routing_heatmaps
from mofme.atomic import write_text_atomic
from mofme.configs import recipe_path, study_settings_path
from mofme.data import SEVERITIES, WEATHER_TYPES, BuiltinWeatherDataset
from mofme.evaluate.restoration import evaluate
from mofme.models import Restorer, load_restorer
from mofme.nn import aux_loss
from mofme.studies.analysis import condition_counts, expert_usage, routing_nmi, uar_selection_change
from mofme.studies.study_report import SCALED_NAME, setting_pairs, write_study
from mofme.timing import machine, time_side_by_side
from mofme.train.config import Config, load_config
from mofme.train.data import build_datasets
from mofme.train.optim import adamw
from mofme.train.trainer import train

__all__ = ["STUDY_VARIANTS", "StudyResult", "load_settings", "run_study", "study_grid"]

RECIPE = "demo_cpu"
DEFAULT_STEPS = 1024  # a step count, not a time: the study gives the same figures on every machine
STUDY_VARIANTS: dict[str, list[str]] = {
    "dense": ["model.ffn=dense"],
    "moe": ["model.ffn=moe", "model.router=linear"],
    "mofme": ["model.ffn=mofme", "model.router=linear"],
    "mofme-uar": ["model.ffn=mofme", "model.router=uar"],
    "mofme-lowrank": ["model.ffn=mofme", "model.router=linear", "model.modulation=lowrank"],
    "mofme-static": ["model.ffn=mofme", "model.router=linear", "model.modulation=static"],
}


@dataclass
class StudyResult:
    output_dir: Path
    summary: dict
    runs: list[dict] = field(default_factory=list)


def load_settings(path: str | Path) -> dict[str, list[str]]:
    """A YAML file (or the name of a shipped one, e.g. ``"specialisation"``) of named study settings, ``name: [override, ...]`` (the overrides of ``mofme
    train``, e.g. ``"model.router_kwargs={balance_coef: 0.1}"``), added to :data:`STUDY_VARIANTS`."""
    path = study_settings_path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of setting name -> list of overrides")
    for name, overrides in raw.items():
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ValueError(f"{path}: setting {name!r} must be a list of 'key=value' overrides")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(name)):
            raise ValueError(f"{path}: setting name {name!r} may use only letters, digits, '_', '.', '-'")
        if SCALED_NAME.fullmatch(str(name)):
            raise ValueError(
                f"{path}: setting name {name!r} ends like a scaling run, <variant>-e<E>: rename it"
            )
    return {str(name): list(overrides) for name, overrides in raw.items()}


def study_grid(
    variants: list[str], *, table: dict[str, list[str]] | None = None, experts: list[int] | None = None
) -> dict[str, list[str]]:
    """Run name -> overrides. With ``experts``, every routed variant runs once per expert count, as
    ``<variant>-e<E>`` (the scaling study: same k, so the same compute per token); ``dense`` once."""
    table = table or STUDY_VARIANTS
    unknown = [v for v in variants if v not in table]
    if unknown:
        raise ValueError(f"unknown study variant(s) {unknown}: choose from {list(table)}")
    grid = {}
    for variant in variants:
        if not experts or "model.ffn=dense" in table[variant]:
            grid[variant] = list(table[variant])
            continue
        for count in experts:
            grid[f"{variant}-e{count}"] = [*table[variant], f"model.num_experts={count}"]
    return grid


def _config(
    variant: list[str], seed: int, output: Path, overrides: list[str], epochs: int, *, recipe: str = RECIPE
) -> Config:
    """``recipe`` with a variant's overrides (``variant``), then the run's, then ``overrides``."""
    return load_config(
        recipe_path(recipe),
        [
            *variant,
            f"train.seed={seed}",
            f"train.output_dir={output}",
            f"train.epochs={epochs}",
            "train.max_minutes=null",
            "train.progress=false",
            "train.log_routing=true",
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


def _trained(config: Config) -> tuple[Path, int]:
    """Train ``config``'s run to its end: continued from its checkpoints when its folder holds the
    same configuration (a study stopped midway), else from scratch. (best dir, steps)."""
    run_dir = Path(config.train.output_dir)
    saved = run_dir / "config.yaml"
    resume = saved.exists() and config.same_as(saved.read_text()) and (run_dir / "checkpoints").exists()
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    result = train(config, resume=resume)
    return result.best_dir, result.steps


def _nmi_curve(run_dir: Path) -> list[dict]:
    """``[{"step": s, "nmi": [per layer]}]`` from the run's ``log.jsonl`` (``train.log_routing``)."""
    log = run_dir / "log.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    curve = {}  # by step: a resumed run logs again the validations after its last checkpoint
    for entry in entries:
        if entry.get("kind") == "routing":
            layers = sorted((k for k in entry if k.startswith("nmi_layer")), key=lambda k: int(k[9:]))
            curve[entry["step"]] = [entry[k] for k in layers]
    return [{"step": step, "nmi": nmi} for step, nmi in sorted(curve.items())]


def _finished(config: Config, test: BuiltinWeatherDataset) -> dict | None:
    """The run ``result.json`` in ``config``'s folder holds, if it has this configuration (alone, no
    weights needed: a study can continue from copies of these files); else None."""
    done = Path(config.train.output_dir) / "result.json"
    if not done.exists():
        return None
    saved = json.loads(done.read_text())
    return _with_severity_routing(saved, done, test) if config.same_as(saved["config"]) else None


def _train_and_score(config: Config, test: BuiltinWeatherDataset, *, variant: str, seed: int) -> dict:
    """Train one variant for one seed; its test metrics and routing analysis, kept in ``result.json``
    of the run's folder (:func:`_finished` reads it back). An unfinished run continues from its last
    checkpoint (:func:`_trained`), so a study stopped by a crash loses at most the steps since that
    checkpoint."""
    run_dir = Path(config.train.output_dir)
    done = run_dir / "result.json"
    best_dir, steps = _trained(config)
    model = load_restorer(best_dir)
    report = evaluate(model, test, **config.eval.model_dump(), progress=False)
    metrics = {w: g.to_dict() for w, g in report.per_weather.items()}
    metrics["mean"] = report.mean_over_weather.to_dict()
    routed = config.model.resolved().ffn != "dense"
    run = {
        "variant": variant,
        "seed": seed,
        "steps": steps,
        "params": sum(p.numel() for p in model.parameters()),
        "metrics": metrics,
        **_routing_fields(model if routed else None, test),
        "uar_change": uar_selection_change(model, test, seed=seed) if routed else [],
        "images": [{"name": r.name, "weather": r.weather, "psnr": r.psnr} for r in report.images],
        "nmi_curve": _nmi_curve(run_dir),
    }
    write_text_atomic(done, json.dumps({"config": config.to_yaml(), "run": run}))  # never half-written
    return run


def _routing_fields(model: Restorer | None, test: BuiltinWeatherDataset) -> dict:
    """Token-assignment counts on ``test`` by weather (``expert_counts``) and by weather x severity
    (``condition_counts``), and per layer NMI(weather; expert), NMI(severity; expert) and
    NMI(weather x severity; expert); empty for a model without routing (``None``)."""
    if model is None:
        return {"nmi": [], "nmi_severity": [], "nmi_condition": [], "expert_counts": None}
    counts = condition_counts(model, test)  # (layers, weathers, severities, experts)
    layers, weathers, severities, experts = counts.shape
    return {
        "nmi": routing_nmi(counts.sum(2)),
        "nmi_severity": routing_nmi(counts.sum(1)),
        "nmi_condition": routing_nmi(counts.reshape(layers, weathers * severities, experts)),
        "expert_counts": counts.sum(2).tolist(),
        "condition_counts": counts.tolist(),
    }


def _with_severity_routing(saved: dict, done: Path, test: BuiltinWeatherDataset) -> dict:
    """A finished routed run saved before the severity analysis existed gets it from its best
    weights (kept in ``done``'s folder), written back to ``done``; other runs as saved."""
    run, best = saved["run"], done.parent / "best"
    if run.get("expert_counts") is None or "nmi_severity" in run or not best.exists():
        return run
    run.update(_routing_fields(load_restorer(best), test))
    write_text_atomic(done, json.dumps({"config": saved["config"], "run": run}))
    return run


def _latency_ms(configs: dict[str, Config], image: torch.Tensor) -> dict[str, float]:
    """Forward latency of each variant's model on ``image`` (1, 3, H, W), median of 5, timed side
    by side. The models are freshly initialised (seed 0): top-k routing computes the same number of
    expert rows whatever the weights, so a study continued from ``result.json`` files alone can
    time them."""
    torch.manual_seed(0)
    models = {variant: config.model.build().eval() for variant, config in configs.items()}

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


def _protocol(
    *, command: str, recipe: str, started: float, steps: int, seeds: int, image: torch.Tensor
) -> dict:
    host = machine()
    return {
        "command": command,
        "machine": f"{host['processor']}, {host['cpu_threads']} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "minutes": (time.monotonic() - started) / 60,
        "steps": steps,
        "seeds": seeds,
        "text": (
            f"recipe `{recipe}` for every variant; {steps} optimiser steps each, "
            f"seeds 0..{seeds - 1} (same data order and seed for every variant); "
            "best checkpoint on the validation photo; test photos never seen in training or selection; "
            f"latency: forward of one {tuple(image.shape[-2:])} test image by each variant's freshly "
            "initialised model, median of 5, side by side."
        ),
    }


def _finished_or_trained(
    config: Config, test: BuiltinWeatherDataset, *, variant: str, seed: int
) -> tuple[dict, bool]:
    """The run found finished (named ``variant``: a run copied from another study may have been
    saved under another name) or trained now, and whether it was trained now."""
    run = _finished(config, test)
    if run is not None:
        return {**run, "variant": variant}, False
    return _train_and_score(config, test, variant=variant, seed=seed), True


def _routing_heatmap(run: dict, path: Path) -> None:
    """Each layer's share of assignments per expert, one row per weather x severity (per weather for
    runs saved before the severity analysis)."""
    if "condition_counts" in run:
        counts = np.asarray(run["condition_counts"])  # (layers, weathers, severities, experts)
        labels = [f"{weather} s{severity}" for weather in WEATHER_TYPES for severity in SEVERITIES]
        counts = counts.reshape(len(counts), len(labels), -1)
    else:
        counts, labels = np.asarray(run["expert_counts"]), list(WEATHER_TYPES)
    routing_heatmaps(expert_usage(counts), labels, path)


def _run_grid(
    grid: dict[str, list[str]],
    test: BuiltinWeatherDataset,
    *,
    recipe: str,
    seeds: int,
    epochs: int,
    output: Path,
    overrides: list[str],
) -> tuple[list[dict], dict[str, Config], int]:
    """Every run of ``grid`` x seeds (seed-major, so every variant has seed 0 early), finished ones
    reused; the runs, the seed-0 configurations (for latency) and how many runs were trained now,
    with each routed seed-0 run's routing heatmaps written."""
    from tqdm.auto import tqdm

    runs, configs, trained = [], {}, 0
    progress = tqdm(total=seeds * len(grid), desc="study", unit="run", dynamic_ncols=True)
    for seed in range(seeds):
        for variant, variant_overrides in grid.items():
            progress.set_postfix_str(f"{variant} seed {seed}")
            run_dir = output / "runs" / f"{variant}-seed{seed}"
            config = _config(variant_overrides, seed, run_dir, overrides, epochs, recipe=recipe)
            run, fresh = _finished_or_trained(config, test, variant=variant, seed=seed)
            trained += fresh
            runs.append(run)
            if seed == 0:
                configs[variant] = config
                if run["expert_counts"] is not None:
                    _routing_heatmap(run, output / f"routing_{variant}.png")
            progress.write(
                f"[mofme study] {variant} seed {seed}: mean PSNR {run['metrics']['mean']['psnr']:.2f} dB"
            )
            progress.update()
    progress.close()
    return runs, configs, trained


def run_study(
    output: str | Path = "mofme-study",
    *,
    steps: int | None = DEFAULT_STEPS,
    minutes_per_run: float = 4.0,
    seeds: int = 3,
    variants: list[str] | None = None,
    settings: dict[str, list[str]] | None = None,
    experts: list[int] | None = None,
    recipe: str = RECIPE,
    overrides: list[str] | None = None,
    command: str = "mofme study",
) -> StudyResult:
    """Train and evaluate every variant for every seed for ``steps`` optimiser steps (``None``: fit
    them to ``minutes_per_run``); write ``report.md``, ``study.json`` and the figures.

    ``recipe`` (a shipped name or a YAML path; default the demo's) is every run's base, e.g.
    ``allweather_paper_mofme`` for the published network on a GPU. ``settings`` adds named variants (:func:`load_settings`) to :data:`STUDY_VARIANTS`; ``experts``
    runs every routed variant once per expert count (:func:`study_grid`). Finished runs found in
    ``output`` with the same configuration are reused, unfinished ones resumed."""
    started = time.monotonic()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    table = {**STUDY_VARIANTS, **(settings or {})}
    grid = study_grid(variants or list(table), table=table, experts=experts)
    overrides = overrides or []
    probe = {v: _config(o, 0, output / "probe", overrides, 1, recipe=recipe) for v, o in grid.items()}
    steps, epochs = _steps(probe, steps, minutes_per_run)
    print(
        f"[mofme study] {len(grid)} variants x {seeds} seeds, {steps} steps each ({epochs} epochs)",
        flush=True,
    )
    test = BuiltinWeatherDataset("test")
    runs, configs, trained = _run_grid(
        grid, test, recipe=recipe, seeds=seeds, epochs=epochs, output=output, overrides=overrides
    )
    image = test[0]["input"].unsqueeze(0)
    latency = _latency_ms(configs, image)
    for run in runs:
        run["latency_ms"] = latency[run["variant"]]
    protocol = _protocol(
        command=command, recipe=recipe, started=started, steps=steps, seeds=seeds, image=image
    )
    protocol["variants"] = grid
    protocol["runs_trained"] = trained  # the others were found finished (an earlier invocation)
    pairs = setting_pairs([name for name in settings or {} if name in grid])
    summary = write_study(output, protocol=protocol, runs=runs, variants=list(grid), pairs=pairs)
    print((output / "report.md").read_text())
    return StudyResult(output, summary, runs)
