"""``mofme demo``: the shipped restorer on the built-in test split, the same numbers on every machine.

Default (about a minute on 2 CPU cores, nothing to download or train):

1. load the weights shipped inside the package (:data:`~mofme.models.DEFAULT_WEIGHTS`, or ``checkpoint``);
2. restore the built-in test split: 2 held-out photos x 4 weather types x 3 severities x 4 renders,
   all rendered with a fixed seed, and score it (PSNR/SSIM per weather type and severity, with standard
   errors); restore the clean test photos too, which should come out unchanged;
3. write ``metrics.json`` / ``metrics.md``, ``comparison.png`` (degraded | restored | clean: every
   weather type on one test photo, the renderer families held out of training on the other, both
   photos without weather) and ``routing.png`` (which experts each weather type uses).

``train=True`` (``mofme demo --train``) first trains a small MoFME restorer from scratch with the
``demo_cpu`` recipe for a fixed number of steps (a step count, not a time budget: one seed gives one
result on any machine), showing the estimated time up front, and writes that model to ``model/``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mofme.apps.plots import comparison_grid, routing_heatmaps
from mofme.configs import recipe_path
from mofme.data import BUILTIN_LONG_SIDE, WEATHER_TYPES, BuiltinWeatherDataset, builtin_photos
from mofme.data.transforms import to_tensor
from mofme.evaluate.restoration import EvalReport, evaluate
from mofme.evaluate.routing import expert_counts, expert_usage
from mofme.infer.fastpath import inference_model
from mofme.infer.restore import model_device
from mofme.losses import RestorationLoss
from mofme.metrics import psnr, quantize
from mofme.models import DEFAULT_WEIGHTS, load_restorer
from mofme.nn import aux_loss
from mofme.train.config import Config, load_config
from mofme.train.trainer import train as train_model

__all__ = ["DemoResult", "estimate_step_seconds", "run_demo"]

RECIPE = "demo_cpu"
TEST_SEED = 0  # the test split is always rendered with this seed: comparable numbers everywhere
FIGURE_PHOTO, FIGURE_SEVERITY = "china", 2  # the comparison figure: the daylight test photo, medium weather
HELD_OUT_PHOTO = "rocket"  # the held-out families in the figure: the other test photo
HELD_OUT_RECIPE = "weather_families"  # the leave-one-family-out recipe: its data.val_families are held out


@dataclass
class DemoResult:
    output_dir: Path
    report: EvalReport
    minutes: float
    train_steps: int  # 0 when the shipped weights were used


def estimate_step_seconds(config: Config, *, steps: int = 3) -> float:
    """Seconds per training step of ``config`` on this machine: the median of ``steps`` timed steps of a
    throwaway copy of the model on random data (after one warm-up step). Leaves the RNG as it was."""
    state = torch.get_rng_state()
    model = config.model.build().train()
    criterion = RestorationLoss(beta=config.loss.smooth_l1_beta)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr)
    size = config.data.crop_size
    batch = torch.rand(config.data.batch_size, 3, size, size)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = criterion(model(batch).image, batch).total + aux_loss(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    torch.set_rng_state(state)
    return float(np.median(times[1:]))


def _train_from_scratch(
    output: Path, *, seed: int, overrides: list[str], progress: bool
) -> tuple[nn.Module, int]:
    run_dir = output / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo always starts afresh
    config = load_config(
        recipe_path(RECIPE),
        [
            f"train.output_dir={run_dir}",
            f"train.seed={seed}",
            f"train.progress={str(progress).lower()}",
            *overrides,
        ],
    )
    steps = config.train.epochs * (config.data.samples_per_epoch // config.data.batch_size)
    estimate = steps * estimate_step_seconds(config) / 60
    print(
        f"[mofme demo] training a {config.model.resolved().ffn} restorer ({config.model.name}) for {steps:,} steps; "
        f"about {estimate:.1f} min on this machine"
    )
    result = train_model(config)
    model = load_restorer(result.best_dir)
    model.save_pretrained(output / "model")
    return model, result.steps


def held_out_families() -> list[str]:
    """The renderer families held out of training by the leave-one-family-out recipe
    (``configs/weather_families.yaml``, ``data.val_families``); the weights shipped today were
    trained on the classic renderer alone, so these are unseen by them too."""
    return list(load_config(recipe_path(HELD_OUT_RECIPE)).data.val_families or [])


@torch.no_grad()
def _row(model: nn.Module, label: str, item: dict) -> tuple:
    """(label, degraded, restored, clean) HxWx3 arrays of one test item."""
    restored = model(item["input"][None]).image[0]
    return (label, *(t.permute(1, 2, 0).numpy() for t in (item["input"], restored, item["target"])))


def _comparison_rows(model: nn.Module, test: BuiltinWeatherDataset, long_side: int) -> list[tuple]:
    """(label, degraded, restored, clean): every weather type on the figure photo, the held-out
    renderer families on the other test photo, then both photos without weather."""
    index = {test[i]["name"]: i for i in range(len(test))}
    name = f"{FIGURE_PHOTO}_{{}}_s{FIGURE_SEVERITY}_r0"
    rows = [_row(model, weather, test[index[name.format(weather)]]) for weather in WEATHER_TYPES]
    for family in held_out_families():
        renders = BuiltinWeatherDataset("test", seed=TEST_SEED, long_side=long_side, family=family, renders=1)
        item = next(i for i in renders if i["name"] == f"{HELD_OUT_PHOTO}_{family}_s{FIGURE_SEVERITY}_r0")
        rows.append(_row(model, f"{family}\n(held out)", item))
    for photo_name, photo in builtin_photos("test", long_side=long_side):
        clean = {"input": to_tensor(photo), "target": to_tensor(photo)}
        rows.append(_row(model, f"{photo_name}, no weather", clean))
    return rows


@torch.no_grad()
def clean_passthrough(model: nn.Module, *, long_side: int = BUILTIN_LONG_SIDE) -> dict[str, float]:
    """PSNR (dB, RGB, 8-bit) of the restored clean test photo against itself, per test photo."""
    model.eval()
    scores = {}
    for name, photo in builtin_photos("test", long_side=long_side):
        clean = to_tensor(photo)[None]
        scores[name] = round(float(psnr(quantize(model(clean).image), clean)[0]), 2)
    return scores


def _routing_figure(model: nn.Module, test: BuiltinWeatherDataset, output: Path) -> None:
    counts = expert_counts(model, test)
    if counts.shape[0] == 0:
        return
    usage = expert_usage(counts)
    routing_heatmaps(usage, WEATHER_TYPES, output / "routing.png")
    (output / "routing.json").write_text(
        json.dumps({"expert_usage": usage.tolist(), "weathers": list(WEATHER_TYPES)})
    )


def run_demo(
    output: str | Path = "mofme-demo",
    *,
    checkpoint: str | Path | None = None,
    train: bool = False,
    seed: int = 0,
    overrides: list[str] | None = None,
    progress: bool = True,
    test_size: int = BUILTIN_LONG_SIDE,
) -> DemoResult:
    """Run the demo into ``output``: the shipped weights (or ``checkpoint``) on the built-in test split;
    with ``train``, a model trained from scratch by the ``demo_cpu`` recipe (``seed``, ``overrides``).
    ``test_size``: long side of the test photos (smaller only to make tests quick)."""
    started = time.monotonic()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    steps = 0
    if train:
        model, steps = _train_from_scratch(output, seed=seed, overrides=overrides or [], progress=progress)
        source = str(output / "model")
    else:
        if overrides:
            raise ValueError(f"recipe overrides {overrides} only apply with --train")
        source = str(checkpoint or DEFAULT_WEIGHTS)
        model = load_restorer(source)
        print(f"[mofme demo] restoring the built-in test split with {source}")
    test = BuiltinWeatherDataset("test", seed=TEST_SEED, long_side=test_size)
    runner = inference_model(model.eval(), device=model_device(model))  # the CPU fast path, if it applies
    report = evaluate(runner, test, progress=progress)  # the recipes' conventions: RGB, no crop, 256 tiles
    report.meta.update(
        {
            "command": "mofme demo" + (f" --train --seed {seed}" if train else ""),
            "checkpoint": source,
            "data": f"built-in test split (photos rocket, china; {len(test)} renders, seed {TEST_SEED})",
            "train_steps": steps,
            "clean_psnr": clean_passthrough(runner, long_side=test_size),
        }
    )
    report.meta.pop("seconds", None)  # the metrics files hold no machine-dependent number
    report.save(output)
    comparison_grid(_comparison_rows(runner, test, test_size), output / "comparison.png")
    _routing_figure(model, test, output)
    total = (time.monotonic() - started) / 60
    print(report.to_markdown())
    print(f"[mofme demo] clean test photos through the model: {report.meta['clean_psnr']} dB PSNR")
    print(
        f"[mofme demo] done in {total:.1f} min; results in {output}/ (metrics.md, comparison.png, routing.png)"
    )
    return DemoResult(output, report, total, steps)
