"""``mofme demo``: the whole pipeline on a CPU in about ten minutes, with nothing to download.

1. render the built-in benchmark (weather on the photos scikit-image and scikit-learn ship);
2. train a small MoFME restorer (recipe ``configs/demo_cpu.yaml``) within the time budget,
   choosing the checkpoint on the validation photos;
3. evaluate on the held-out test photos (never trained on, never used for selection);
4. write ``metrics.json`` / ``metrics.md``, ``comparison.png``, ``routing.png`` and ``model/``
   (a checkpoint that ``mofme restore --checkpoint`` accepts) into the output folder.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mofme.analysis import expert_counts
from mofme.configs import recipe_path
from mofme.data import WEATHER_TYPES, BuiltinWeatherDataset
from mofme.engine.config import load_config
from mofme.engine.evaluate import EvalReport, evaluate
from mofme.engine.trainer import train
from mofme.models import Restorer, load_restorer
from mofme.plots import comparison_grid, routing_heatmaps

__all__ = ["DemoResult", "run_demo"]

RECIPE = "demo_cpu"
_RESERVE_MINUTES = 0.6  # start-up, evaluation and figures (about 25 s measured)


@dataclass
class DemoResult:
    output_dir: Path
    report: EvalReport
    minutes: float
    train_steps: int


def _comparison_rows(model: Restorer, dataset: BuiltinWeatherDataset) -> list[tuple]:
    rows, seen = [], set()
    with torch.no_grad():
        for item in dataset:
            weather = WEATHER_TYPES[item["weather"]]
            if weather in seen:
                continue
            seen.add(weather)
            restored = model(item["input"].unsqueeze(0)).image[0]
            rows.append(
                (weather, *(t.permute(1, 2, 0).numpy() for t in (item["input"], restored, item["target"])))
            )
    return rows


def run_demo(
    output: str | Path = "mofme-demo",
    *,
    minutes: float = 10.0,
    seed: int = 0,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> DemoResult:
    """Run the demo into ``output`` within about ``minutes`` (training gets all but one minute)."""
    started = time.monotonic()
    output = Path(output)
    run_dir = output / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo always starts afresh
    output.mkdir(parents=True, exist_ok=True)
    train_minutes = max(0.25, minutes - _RESERVE_MINUTES)
    config = load_config(
        recipe_path(RECIPE),
        [
            f"train.output_dir={run_dir}",
            f"train.max_minutes={train_minutes}",
            f"train.seed={seed}",
            f"train.progress={str(progress).lower()}",
            *(overrides or []),
        ],
    )
    print(
        f"[mofme demo] training a {config.model.ffn} restorer ({config.model.preset}) for up to {train_minutes:.1f} min"
    )
    result = train(config)
    model = load_restorer(result.best_dir)
    model.save_pretrained(output / "model")
    test = BuiltinWeatherDataset("test", weathers=tuple(config.data.weathers or WEATHER_TYPES), seed=seed)
    conv = config.eval
    report = evaluate(
        model,
        test,
        **conv.model_dump(),
        progress=progress,
    )
    report.meta.update(
        {
            "command": "mofme demo",
            "data": "built-in benchmark, test photos "
            + ", ".join(sorted({r.name.split("_")[0] for r in report.images})),
            "train_steps": result.steps,
            "train_minutes": round(result.minutes, 2),
            "selected_on": "validation photos (mean PSNR over weather types)",
            "checkpoint": str(output / "model"),
        }
    )
    report.save(output)
    comparison_grid(_comparison_rows(model, test), output / "comparison.png")
    if config.model.ffn != "dense":
        counts = expert_counts(model, test)
        usage = counts / np.maximum(counts.sum(axis=2, keepdims=True), 1)
        routing_heatmaps(usage, WEATHER_TYPES, output / "routing.png")
        (output / "routing.json").write_text(
            json.dumps({"expert_usage": usage.tolist(), "weathers": list(WEATHER_TYPES)})
        )
    total = (time.monotonic() - started) / 60
    print(report.to_markdown())
    print(
        f"[mofme demo] done in {total:.1f} min; results in {output}/ (metrics.md, comparison.png, routing.png, model/)"
    )
    return DemoResult(output, report, total, result.steps)
