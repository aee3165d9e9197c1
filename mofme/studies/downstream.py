"""The recognition comparison: dense vs MoE vs MoFME (linear router) vs MoFME (UaR) at an equal
budget on a built-in recognition task, several seeds.

    python -m mofme.studies.downstream --task scenes --seeds 3 --steps 768 --output docs/results/downstream/comparison_scenes

Protocol (written into ``summary.json``): the task's shipped recipe (``scenes_vit`` or
``degradation_vit``) with the FFN of each variant (:data:`~mofme.studies.study.STUDY_VARIANTS`), the same
number of optimiser steps, data order and initial seed per seed; selection on the validation split;
one evaluation of the selected model on the test split. Each finished run keeps its ``test.json``,
so an interrupted comparison continues where it stopped. ``report.md``: mean ± std over seeds of
the test score per weather type and overall, parameters, and the routing's agreement with
the weather type: accuracy and ECE of the weather read off the expert usage, and NMI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from mofme.configs import recipe_path
from mofme.data.builtin_tasks import DegradationDataset, SceneDataset
from mofme.evaluate.recognition import evaluate_classifier, evaluate_segmenter
from mofme.models import load_model
from mofme.studies.analysis import (
    expert_counts,
    routing_nmi,
    routing_weather_calibration,
    weather_routing_mass,
)
from mofme.studies.study import STUDY_VARIANTS
from mofme.train.config import load_config
from mofme.train.trainer import train

__all__ = ["TASK_RECIPES", "compare", "main", "summarise"]

TASK_RECIPES = {"scenes": "scenes_vit", "degradation": "degradation_vit"}
COMPARED_VARIANTS = ("dense", "moe", "mofme", "mofme-uar")  # the default of --variants


def _eval_set(task: str, split: str):
    """The fixed ``split`` ("val" or "test") of the task."""
    return SceneDataset(split) if task == "scenes" else DegradationDataset(split)


def _run(
    task: str, variant: str, seed: int, steps: int, output: Path, overrides: Sequence[str], test_set
) -> dict:
    """Train one (variant, seed) for ``steps`` steps and score its selected model on ``test_set``."""
    scored = output / "test.json"
    if scored.exists():
        return json.loads(scored.read_text())
    recipe = recipe_path(TASK_RECIPES[task])
    chosen = [*STUDY_VARIANTS[variant], f"train.seed={seed}", *overrides]
    data = load_config(recipe, chosen).data
    epochs = max(1, round(steps / (data.samples_per_epoch // data.batch_size)))
    config = load_config(
        recipe, [*chosen, f"train.epochs={epochs}", f"train.output_dir={output}", "train.progress=false"]
    )
    result = train(config, resume=True)
    model = load_model(result.best_dir)
    if task == "scenes":
        report = evaluate_classifier(model, test_set)
    else:
        report = evaluate_segmenter(model, test_set, tile=config.eval.tile, overlap=config.eval.overlap)
    run = {
        "variant": variant,
        "seed": seed,
        "steps": result.steps,
        "params": sum(p.numel() for p in model.parameters()),
        "metric": report.metric,
        "test": {weather: group[report.metric] for weather, group in report.per_weather.items()},
        "overall": report.score,
    }
    scored.write_text(json.dumps(run, indent=2))
    return run


def _with_routing(run: dict, output: Path, val_set, test_set) -> dict:
    """Add the routing analysis of a routed run (once; kept in its ``test.json``): per
    routed layer the weather accuracy and ECE of the routing (:func:`routing_weather_calibration`,
    fitted on the validation split) and NMI(weather; expert) on the test split."""
    if "routing" in run or run["variant"] == "dense":
        return run
    model = load_model(output / "best")
    fit, test = weather_routing_mass(model, val_set), weather_routing_mass(model, test_set)
    nmi = routing_nmi(expert_counts(model, test_set, key="image"))
    calibration = routing_weather_calibration(fit, test)
    run["routing"] = [
        {"layer": i, **c, "nmi": n} for i, (c, n) in enumerate(zip(calibration, nmi, strict=True))
    ]
    (output / "test.json").write_text(json.dumps(run, indent=2))
    return run


def _routing_summary(mine: list[dict]) -> dict[str, dict] | None:
    """Mean and std over seeds of the layer-mean routing weather accuracy, ECE and NMI."""
    if not all("routing" in r for r in mine):
        return None
    summary = {}
    for key in ("weather_accuracy", "ece", "nmi"):
        values = [statistics.fmean(layer[key] for layer in r["routing"]) for r in mine]
        summary[key] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    return summary


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per variant: the mean and std (over seeds) of the overall score and of each weather's score."""
    summary: dict[str, dict] = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        columns = {"overall": [r["overall"] for r in mine]}
        for weather in mine[0]["test"]:
            columns[weather] = [r["test"][weather] for r in mine]
        summary[variant] = {
            "seeds": len(mine),
            "params": mine[0]["params"],
            "routing": _routing_summary(mine),
            **{
                k: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
                for k, v in columns.items()
            },
        }
    return summary


def report_markdown(task: str, metric: str, summary: dict[str, dict], command: str) -> str:
    columns = [k for k in next(iter(summary.values())) if k not in ("seeds", "params", "routing")]
    lines = [
        f"# {task}: dense vs MoE vs MoFME at an equal budget",
        "",
        f"`{command}`",
        "",
        f"Test {metric} (%), mean ± std over seeds; selection on the validation split.",
        "",
        "| variant | seeds | params | " + " | ".join(columns) + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for variant, row in summary.items():
        cells = [f"{100 * row[c]['mean']:.1f} ± {100 * row[c]['std']:.1f}" for c in columns]
        lines.append(
            f"| {variant} | {row['seeds']} | {row['params'] / 1e6:.3f}M | " + " | ".join(cells) + " |"
        )
    routed = {v: row["routing"] for v, row in summary.items() if row.get("routing")}
    if routed:
        lines += [
            "",
            "Routing vs weather type (mean over routed layers; mean ± std over seeds): accuracy and ECE of",
            "the weather predicted from each image's expert usage (P(weather | expert) fitted on the",
            "validation split), and NMI(weather; expert) of the token assignments, on the test split.",
            "",
            "| variant | weather accuracy % | ECE | NMI |",
            "|---|---:|---:|---:|",
        ]
        for variant, r in routed.items():
            acc, ece, nmi = r["weather_accuracy"], r["ece"], r["nmi"]
            lines.append(
                f"| {variant} | {100 * acc['mean']:.1f} ± {100 * acc['std']:.1f} | {ece['mean']:.3f} ± {ece['std']:.3f} "
                f"| {nmi['mean']:.3f} ± {nmi['std']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def compare(
    task: str,
    output: Path,
    *,
    seeds: int,
    steps: int,
    variants: Sequence[str],
    command: str,
    overrides: Sequence[str] = (),
) -> str:
    """Every (variant, seed) run (skipping finished ones; ``overrides`` apply to every recipe), then
    ``summary.json`` and ``report.md`` (returned)."""
    test_set = _eval_set(task, "test")
    runs = [
        _run(task, v, s, steps, output / f"{v}_seed{s}", overrides, test_set)
        for s in range(seeds)
        for v in variants
    ]
    val_set = _eval_set(task, "val")
    runs = [_with_routing(r, output / f"{r['variant']}_seed{r['seed']}", val_set, test_set) for r in runs]
    summary = summarise(runs)
    protocol = {
        "task": task,
        "recipe": TASK_RECIPES[task],
        "steps": steps,
        "seeds": seeds,
        "command": command,
        "overrides": list(overrides),
    }
    (output / "summary.json").write_text(
        json.dumps({"protocol": protocol, "summary": summary, "runs": runs}, indent=2)
    )
    report = report_markdown(task, runs[0]["metric"], summary, command)
    (output / "report.md").write_text(report)
    return report


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m mofme.studies.downstream", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--task", choices=sorted(TASK_RECIPES), required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=768)
    parser.add_argument(
        "--variants", nargs="+", default=list(COMPARED_VARIANTS), choices=list(STUDY_VARIANTS)
    )
    parser.add_argument(
        "overrides", nargs="*", help="recipe overrides for every run, e.g. data.batch_size=16"
    )
    args = parser.parse_args(argv)
    command = parser.prog + " " + " ".join(sys.argv[1:] if argv is None else argv)
    options = {
        "seeds": args.seeds,
        "steps": args.steps,
        "variants": args.variants,
        "overrides": args.overrides,
    }
    options["command"] = command
    print(compare(args.task, args.output, **options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
