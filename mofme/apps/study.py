"""``mofme study``: dense vs MoE vs MoFME (linear router) vs MoFME (UaR) at an equal budget.

Protocol (written into the report): the demo recipe (built-in benchmark, small preset) for every
variant; the same number of optimiser steps for all (fitted so that the slowest variant takes
about ``minutes_per_run``), the same data order and initial seed per seed; model selection on the
validation photo; evaluation on the held-out test photos. Reported: mean +- std over seeds of
PSNR/SSIM per weather type and overall, parameters, forward latency, and the routing analysis
(expert usage per weather type, NMI between weather type and expert per layer, how often UaR's
MC selection differs from its deterministic one).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mofme.apps.analysis import expert_counts, expert_usage, routing_nmi, uar_selection_change
from mofme.apps.plots import routing_heatmaps
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
STUDY_VARIANTS: dict[str, list[str]] = {
    "dense": ["model.ffn=dense"],
    "moe": ["model.ffn=moe", "model.router=linear"],
    "mofme": ["model.ffn=mofme", "model.router=linear"],
    "mofme-uar": ["model.ffn=mofme", "model.router=uar"],
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


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _summarise(runs: list[dict], variants: list[str]) -> dict:
    summary = {}
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        entry = {"params": mine[0]["params"], "latency_ms": mine[0]["latency_ms"], "seeds": len(mine)}
        for group in [*WEATHER_TYPES, "mean"]:
            for metric in ("psnr", "ssim"):
                entry[f"{group}_{metric}"] = _mean_std([r["metrics"][group][metric] for r in mine])
        entry["input_psnr"] = mine[0]["metrics"]["mean"]["input_psnr"]
        if mine[0]["nmi"]:
            entry["nmi"] = [_mean_std(list(layer)) for layer in zip(*(r["nmi"] for r in mine), strict=True)]
        if mine[0]["uar_change"]:
            entry["uar_change"] = [
                _mean_std(list(layer)) for layer in zip(*(r["uar_change"] for r in mine), strict=True)
            ]
        summary[variant] = entry
    return summary


def _report(summary: dict, protocol: dict) -> str:
    lines = [
        "# mofme study: dense vs MoE vs MoFME at an equal budget",
        "",
        f"Command: `{protocol['command']}`  ",
        f"Machine: {protocol['machine']}; date {protocol['date']}; wall time {protocol['minutes']:.1f} min.  ",
        f"Protocol: {protocol['text']}",
        "",
        "Restored PSNR (dB) on the held-out test photos, mean +- std over seeds (RGB, 8-bit outputs, full resolution).",
        "",
        "| variant | params | latency ms | " + " | ".join(WEATHER_TYPES) + " | mean PSNR | mean SSIM |",
        "|---|---:|---:|" + "---:|" * (len(WEATHER_TYPES) + 2),
    ]
    for variant, s in summary.items():
        cells = [f"{s[f'{w}_psnr'][0]:.2f} +- {s[f'{w}_psnr'][1]:.2f}" for w in WEATHER_TYPES]
        lines.append(
            f"| {variant} | {s['params']:,} | {s['latency_ms']:.1f} | "
            + " | ".join(cells)
            + f" | **{s['mean_psnr'][0]:.2f} +- {s['mean_psnr'][1]:.2f}** | {s['mean_ssim'][0]:.4f} +- {s['mean_ssim'][1]:.4f} |"
        )
    first = next(iter(summary.values()))
    lines += ["", f"Degraded input: mean PSNR {first['input_psnr']:.2f} dB.", ""]
    verdicts = []
    if {"mofme", "moe", "dense"} <= summary.keys():
        gap_moe = summary["mofme"]["mean_psnr"][0] - summary["moe"]["mean_psnr"][0]
        gap_dense = summary["mofme"]["mean_psnr"][0] - summary["dense"]["mean_psnr"][0]
        verdicts.append(
            f"- MoFME vs MoE: {gap_moe:+.2f} dB (claim: >= +0.1 dB) -> {'holds' if gap_moe >= 0.1 else 'does NOT hold'}."
        )
        verdicts.append(
            f"- MoFME vs dense: {gap_dense:+.2f} dB (claim: >= 0) -> {'holds' if gap_dense >= 0 else 'does NOT hold'}."
        )
    if {"mofme-uar", "mofme"} <= summary.keys():
        gap_uar = summary["mofme-uar"]["mean_psnr"][0] - summary["mofme"]["mean_psnr"][0]
        verdicts.append(f"- UaR vs linear router (both MoFME): {gap_uar:+.2f} dB.")
    lines += ["## Verdict", "", *verdicts, "", "## Routing", ""]
    lines += [
        "| variant | NMI(weather; expert) per layer | UaR MC selection differs from deterministic (per layer) |",
        "|---|---|---|",
    ]
    for variant, s in summary.items():
        nmi = ", ".join(f"{m:.3f} +- {d:.3f}" for m, d in s.get("nmi", [])) or "-"
        change = ", ".join(f"{100 * m:.1f}% +- {100 * d:.1f}" for m, d in s.get("uar_change", [])) or "-"
        lines.append(f"| {variant} | {nmi} | {change} |")
    lines += [
        "",
        "Figures: `psnr.png` (per weather type, error bars = std over seeds), `routing_<variant>.png` (seed 0).",
    ]
    return "\n".join(lines) + "\n"


def _plot_psnr(summary: dict, path: Path) -> None:
    from mofme.apps.plots import pyplot

    plt = pyplot()

    groups = [*WEATHER_TYPES, "mean"]
    width = 0.8 / len(summary)
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (variant, s) in enumerate(summary.items()):
        means = [s[f"{g}_psnr"][0] for g in groups]
        stds = [s[f"{g}_psnr"][1] for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, means, width, yerr=stds, capsize=3, label=variant)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    ax.set_ylabel("restored PSNR (dB)")
    ax.set_ylim(bottom=min(s["mean_psnr"][0] for s in summary.values()) - 6)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_study(
    output: str | Path = "mofme-study",
    *,
    minutes_per_run: float = 4.0,
    seeds: int = 3,
    variants: list[str] | None = None,
    steps: int | None = None,
    overrides: list[str] | None = None,
    command: str = "mofme study",
) -> StudyResult:
    """Train and evaluate every variant for every seed; write ``report.md``, ``study.json`` and plots."""
    started = time.monotonic()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    variants = variants or list(STUDY_VARIANTS)
    overrides = overrides or []
    probe = {v: _config(v, 0, output / "probe", overrides, 1) for v in variants}
    steps_per_epoch = probe[variants[0]].data.samples_per_epoch // probe[variants[0]].data.batch_size
    if steps is None:
        slowest = max(_seconds_per_step(config) for config in probe.values())
        steps = int(60 * minutes_per_run * 0.9 / slowest)
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    steps = epochs * steps_per_epoch
    print(
        f"[mofme study] {len(variants)} variants x {seeds} seeds, {steps} steps each ({epochs} epochs)",
        flush=True,
    )
    test = BuiltinWeatherDataset("test")
    runs, models = [], {}
    for seed in range(seeds):
        for variant in variants:
            run_dir = output / "runs" / f"{variant}-seed{seed}"
            config = _config(variant, seed, run_dir, overrides, epochs)
            if run_dir.exists():
                shutil.rmtree(run_dir)
            result = train(config)
            model = load_restorer(result.best_dir)
            report = evaluate(model, test, **config.eval.model_dump(), progress=False)
            metrics = {w: g.to_dict() for w, g in report.per_weather.items()}
            metrics["mean"] = report.mean_over_weather.to_dict()
            routed = config.model.resolved().ffn != "dense"
            counts = expert_counts(model, test) if routed else None
            runs.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "steps": result.steps,
                    "params": sum(p.numel() for p in model.parameters()),
                    "metrics": metrics,
                    "nmi": routing_nmi(counts) if routed else [],
                    "uar_change": uar_selection_change(model, test, seed=seed) if routed else [],
                    "expert_counts": counts.tolist() if routed else None,
                }
            )
            if seed == 0:
                models[variant] = model
                if routed:
                    usage = expert_usage(counts)
                    routing_heatmaps(usage, WEATHER_TYPES, output / f"routing_{variant}.png")
            print(
                f"[mofme study] {variant} seed {seed}: mean PSNR {metrics['mean']['psnr']:.2f} dB", flush=True
            )
    image = test[0]["input"].unsqueeze(0)

    def forward(model: Restorer):
        def run() -> None:
            with torch.no_grad():
                model(image)

        return run

    latency = time_side_by_side(
        {v: forward(m) for v, m in models.items()}, warmup=1, repeats=5, device=torch.device("cpu")
    )
    for run in runs:
        run["latency_ms"] = latency[run["variant"]] * 1e3
    summary = _summarise(runs, variants)
    host = machine()
    protocol = {
        "command": command,
        "machine": f"{host['processor']}, {host['cpu_threads']} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "minutes": (time.monotonic() - started) / 60,
        "steps": steps,
        "seeds": seeds,
        "text": (
            f"recipe `{RECIPE}` (small preset, built-in benchmark) for every variant; {steps} optimiser steps each "
            f"(the slowest variant's budget), seeds 0..{seeds - 1} (same data order and seed for every variant); "
            "best checkpoint on the validation photo; test photos never seen in training or selection; "
            f"latency: forward of one {tuple(image.shape[-2:])} test image, median of 5, side by side."
        ),
    }
    (output / "study.json").write_text(
        json.dumps({"protocol": protocol, "summary": summary, "runs": runs}, indent=2)
    )
    (output / "report.md").write_text(_report(summary, protocol))
    _plot_psnr(summary, output / "psnr.png")
    print((output / "report.md").read_text())
    return StudyResult(output, summary, runs)
