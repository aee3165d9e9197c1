"""Evaluate a recognition model (classifier or segmenter) per weather condition, and the
restore-then-recognise experiment: the same model on degraded images and on restored ones.

    report = evaluate_classifier(model, SceneDataset("test"), device="cuda")
    report = evaluate_segmenter(model, DegradationDataset("test"), tile=64, overlap=16)
    print(report.to_markdown())
    report.save("results/scenes")                       # metrics.json + metrics.md
    degraded, restored = compare_with_restoration(model, data, restorer, task="classification")
    plot_restore_then_recognise(degraded, restored, "restore_then_recognise.png")   # mofme.apps.plots

Conventions (recorded in ``report.conventions``):

* items are dicts: ``"image"`` (3, H, W) float in [0, 1]; ``"label"`` (int) for classification or
  ``"mask"`` (H, W) int class ids (``ignore_index`` = unlabelled) for segmentation; optionally
  ``"weather"`` (an index in ``WEATHER_TYPES``, -1 = clean, or a name) and ``"severity"`` (0 = clean, 1..3),
  or a dataset's own ``"condition"`` name (ACDC: fog / night / rain / snow; no severity).
* groups: one per condition, named ``"clean"``, ``"<weather>/s<severity>"`` (``"<weather>"`` for severity
  0) or ``"<condition>"``; items with neither ``"weather"`` nor ``"condition"`` form the one group
  ``"all"``. ``per_weather`` pools each weather's severities (``"clean"`` stays its own group) and
  ``overall`` pools every item. Metrics of a pooled group are computed on the pooled items or pixels,
  never averaged over sub-groups.
* classification: top-1 accuracy; per-class accuracy = the share of a class's items predicted as that
  class (nan for a class without items in the group), ``mean_class_accuracy`` their mean over the
  classes present; ECE: the top-1 softmax probability (confidence) binned into 15 equal-width bins
  ``[k/15, (k+1)/15)``, ECE = sum over bins of (share of the items in the bin) x |accuracy - mean
  confidence| (torchmetrics' ``multiclass_calibration_error``, l1). ``score`` = overall accuracy.
* segmentation: logits by tiled inference (:func:`~mofme.infer.segment.segment_logits`, blended raised-cosine windows),
  argmax per pixel; confusion matrices (rows: target, columns: prediction) summed over the pixels of a
  group, ``ignore_index`` pixels left out. IoU_c = TP / (TP + FP + FN); mIoU = the mean IoU over the
  classes present in the group's target or prediction (TP + FP + FN > 0; the other classes' IoU is nan
  and left out); pixel accuracy = correct / labelled pixels. ``score`` = overall mIoU.
* with a ``restorer`` every image is restored first (eval mode, no gradients: one forward pass when
  the image fits one ``restore_tile`` window at a multiple of the restorer's patch size, else tiled),
  clamped to [0, 1], and the recogniser scores the restored image against the same labels.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mofme._types import PathLike
from mofme.atomic import write_text_atomic
from mofme.data.recognition import IGNORE_INDEX
from mofme.data.weather import WEATHER_TYPES
from mofme.evaluate.restoration import finite_or_str
from mofme.infer.restore import (
    _image_of,
    eval_mode,
    model_dtype,
    model_patch_size,
    prepare_model,
    restore_tensor,
)
from mofme.infer.segment import logits_of, segment_logits

__all__ = [
    "ECE_BINS",
    "TASKS",
    "RecognitionReport",
    "compare_with_restoration",
    "condition_name",
    "evaluate_classifier",
    "evaluate_segmenter",
    "item_condition",
    "restoration_rows",
    "restoration_table_markdown",
    "task_of",
]

TASKS = ("classification", "segmentation")
ECE_BINS = 15
_METRIC = {"classification": "accuracy", "segmentation": "miou"}
_PER_CLASS = {"classification": "per_class_accuracy", "segmentation": "iou"}
_COLUMNS = {  # (key, markdown header); every value is a fraction, shown in %
    "classification": (("accuracy", "accuracy %"), ("mean_class_accuracy", "mean class acc. %")),
    "segmentation": (("miou", "mIoU %"), ("pixel_accuracy", "pixel acc. %")),
}

Condition = tuple[str, int]  # (weather or condition name | "clean" | "all", severity)


# ---------------------------------------------------------------------------------------------- conditions
def item_condition(item: dict) -> Condition:
    """``(weather, severity)`` of a dataset item: ``"clean"`` for weather -1 / ``"clean"`` (severity 0),
    a name of ``WEATHER_TYPES``; ``(condition, 0)`` for an item with a ``"condition"`` name and no
    ``"weather"``; ``("all", 0)`` for an item with neither."""
    if "weather" not in item:
        return (str(item["condition"]), 0) if "condition" in item else ("all", 0)
    weather = item["weather"]
    if isinstance(weather, Tensor):
        weather = weather.item()
    if isinstance(weather, int | np.integer):
        if not -1 <= weather < len(WEATHER_TYPES):
            raise ValueError(f"weather index {weather} is not -1 (clean) or an index in {WEATHER_TYPES}")
        weather = "clean" if weather == -1 else WEATHER_TYPES[weather]
    weather = str(weather)
    return (weather, 0 if weather == "clean" else int(item.get("severity", 0)))


def condition_name(condition: Condition) -> str:
    """``"clean"``, ``"all"``, ``"rain"`` (severity 0) or ``"rain/s2"``."""
    weather, severity = condition
    return f"{weather}/s{severity}" if severity else weather


def _condition_order(condition: Condition) -> tuple[int, str, int]:
    """clean first, then ``WEATHER_TYPES`` order, then other names sorted; severities ascending."""
    weather, severity = condition
    known = ("clean", *WEATHER_TYPES)
    return (known.index(weather) if weather in known else len(known), weather, severity)


# ---------------------------------------------------------------------------------------------- report
@dataclass
class RecognitionReport:
    """Metrics of a recogniser on a data set: ``overall``, ``per_condition`` (keys of
    :func:`condition_name`) and ``per_weather``, each a dict of metrics (``images`` and the task's
    metrics, see the module docstring; per-class values keyed by class name). ``score`` is the overall
    accuracy (classification) or mIoU (segmentation). ``meta``: free-form provenance."""

    task: str
    classes: tuple[str, ...]
    overall: dict[str, Any]
    per_condition: dict[str, dict[str, Any]]
    per_weather: dict[str, dict[str, Any]]
    score: float
    conventions: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        """The key of ``score`` in the metric dicts: ``"accuracy"`` or ``"miou"``."""
        return _METRIC[self.task]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metric": self.metric,
            "score": self.score,
            "classes": list(self.classes),
            "conventions": self.conventions,
            "meta": self.meta,
            "overall": self.overall,
            "per_condition": self.per_condition,
            "per_weather": self.per_weather,
        }

    def to_json(self, *, indent: int = 2) -> str:
        """Strict JSON (nan written as the string ``"nan"``)."""
        return json.dumps(finite_or_str(self.to_dict()), indent=indent, allow_nan=False)

    def to_markdown(self) -> str:
        """A table per condition and per weather (the task's metrics in %, ECE for classification), and a
        per-class table (accuracy or IoU, overall and per weather)."""
        lines = [", ".join(f"{k}: {v}" for k, v in self.meta.items()), ""] if self.meta else []
        lines += [f"{self.task}, {len(self.classes)} classes; {self.conventions.get('summary', '')}", ""]
        lines += self._group_table("condition", {**self.per_condition, "**overall**": self.overall})
        lines += ["", "Per weather type (all severities pooled):", ""]
        lines += self._group_table("weather", self.per_weather)
        lines += ["", f"Per class ({'accuracy' if self.task == 'classification' else 'IoU'} %):", ""]
        lines += self._class_table()
        return "\n".join(lines) + "\n"

    def _group_table(self, label: str, groups: dict[str, dict[str, Any]]) -> list[str]:
        columns = _COLUMNS[self.task]
        ece = self.task == "classification"
        head = f"| {label} | images | " + " | ".join(h for _, h in columns) + (" | ECE |" if ece else " |")
        rows = [head, "|---|---:|" + "---:|" * (len(columns) + ece)]
        for name, g in groups.items():
            cells = [_percent(g[key]) for key, _ in columns] + ([f"{g['ece']:.4f}"] if ece else [])
            rows.append(f"| {name} | {g['images']} | " + " | ".join(cells) + " |")
        return rows

    def _class_table(self) -> list[str]:
        key = _PER_CLASS[self.task]
        groups = {"overall": self.overall, **self.per_weather}
        rows = ["| class | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
        for name in self.classes:
            rows.append(f"| {name} | " + " | ".join(_percent(g[key][name]) for g in groups.values()) + " |")
        return rows

    def save(self, directory: PathLike) -> tuple[Path, Path]:
        """Write ``metrics.json`` and ``metrics.md`` into ``directory`` (created), each atomically;
        returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path, md_path = directory / "metrics.json", directory / "metrics.md"
        write_text_atomic(json_path, self.to_json() + "\n")
        write_text_atomic(md_path, self.to_markdown())
        return json_path, md_path


def _percent(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.2f}"


def _grouped(
    task: str,
    classes: tuple[str, ...],
    states: dict[Condition, Any],
    counts: Counter,
    pool: Callable[[list[Any]], Any],
    metrics: Callable[[Any, tuple[str, ...]], dict[str, Any]],
    conventions: dict[str, Any],
    meta: dict[str, Any],
) -> RecognitionReport:
    """The report from each condition's accumulated ``states`` (pooled with ``pool``, scored with
    ``metrics``) and item ``counts``."""
    if not states:
        raise ValueError("nothing to evaluate: the data set holds no items")
    order = sorted(states, key=_condition_order)

    def summary(keys: list[Condition]) -> dict[str, Any]:
        return {"images": sum(counts[k] for k in keys), **metrics(pool([states[k] for k in keys]), classes)}

    weathers = dict.fromkeys(weather for weather, _ in order)
    overall = summary(order)
    return RecognitionReport(
        task,
        classes,
        overall,
        {condition_name(k): summary([k]) for k in order},
        {w: summary([k for k in order if k[0] == w]) for w in weathers},
        overall[_METRIC[task]],
        conventions,
        meta,
    )


# ---------------------------------------------------------------------------------------------- shared
def _items(dataset: Iterable[dict]) -> Iterator[dict]:
    """The items of a map-style dataset (by index, ``0 .. len - 1``) or of any iterable."""
    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        for index in range(len(dataset)):
            yield dataset[index]
    else:
        yield from dataset


def _image(item: dict) -> Tensor:
    image = torch.as_tensor(item["image"])
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"item {item.get('name', '')!r}: expected a (3, H, W) image, got {tuple(image.shape)}"
        )
    return image.float()


def _class_names(dataset: Any, num_classes: int) -> tuple[str, ...]:
    """``dataset.classes`` (checked against the model's number of outputs), else "0" .. "C-1"."""
    names = getattr(dataset, "classes", None)
    if names is None:
        return tuple(str(c) for c in range(num_classes))
    if len(names) != num_classes:
        raise ValueError(
            f"the model predicts {num_classes} classes but the data set has {len(names)}: {names}"
        )
    return tuple(names)


@contextlib.contextmanager
def _inference(*models: nn.Module | None) -> Iterator[None]:
    """Every given model in eval mode (previous modes restored on exit), under ``torch.no_grad``."""
    with contextlib.ExitStack() as stack:
        for model in models:
            if model is not None:
                stack.enter_context(eval_mode(model))
        stack.enter_context(torch.no_grad())
        yield


def _progress(dataset: Any, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    total = len(dataset) if hasattr(dataset, "__len__") else None
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled)


def _restore_batch(
    restorer: nn.Module, images: Tensor, *, device: torch.device, tile: int, overlap: int
) -> Tensor:
    """Restored (B, 3, H, W) images on ``device``, clamped to [0, 1]: one forward pass when the images
    fit one ``tile`` window and H, W are multiples of the restorer's patch size (what tiled inference
    does then too), otherwise :func:`~mofme.infer.restore.restore_tensor` image by image."""
    patch = model_patch_size(restorer)
    height, width = images.shape[-2:]
    if height % patch == 0 and width % patch == 0 and max(height, width) <= tile:
        restored = _image_of(restorer(images.to(device, model_dtype(restorer)))).float()
    else:
        restored = torch.stack(
            [
                restore_tensor(restorer, image, device=device, tile=tile, overlap=overlap, batch_size=1)
                for image in images
            ]
        )
    return restored.clamp(0, 1)


def _meta(start: float, device: torch.device, restorer: nn.Module | None) -> dict[str, Any]:
    restored = None if restorer is None else type(restorer).__name__
    return {"seconds": round(time.perf_counter() - start, 3), "device": str(device), "restorer": restored}


# ---------------------------------------------------------------------------------------------- classification
def _batches(items: Iterable[dict], batch_size: int) -> Iterator[list[dict]]:
    """Consecutive items in lists of at most ``batch_size`` whose images share one shape."""
    batch: list[dict] = []
    for item in items:
        if batch and (len(batch) == batch_size or _image(item).shape != _image(batch[0]).shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _classification_metrics(state: tuple[Tensor, Tensor], classes: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy, per-class accuracy, ECE and the confusion matrix of ``(probs (N, C), labels (N,))``."""
    from torchmetrics.functional.classification import (
        multiclass_calibration_error,
        multiclass_confusion_matrix,
    )

    probs, labels = state
    confusion = multiclass_confusion_matrix(probs.argmax(1), labels, len(classes))  # rows: target
    correct, support = confusion.diagonal().double(), confusion.sum(1).double()
    per_class = torch.where(support > 0, correct / support.clamp(min=1), math.nan)
    ece = multiclass_calibration_error(probs, labels, len(classes), n_bins=ECE_BINS, norm="l1")
    return {
        "accuracy": float(correct.sum() / support.sum()),
        "mean_class_accuracy": float(per_class.nanmean()),
        "ece": float(ece),
        "per_class_accuracy": dict(zip(classes, per_class.tolist(), strict=True)),
        "confusion_matrix": confusion.tolist(),
    }


def _pool_classification(states: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    return torch.cat([p for p, _ in states]), torch.cat([y for _, y in states])


def evaluate_classifier(
    model: nn.Module,
    dataset: Iterable[dict],
    *,
    batch_size: int = 64,
    device: str | torch.device | None = "cpu",
    restorer: nn.Module | None = None,
    restore_tile: int = 256,
    restore_overlap: int = 32,
    progress: bool = False,
) -> RecognitionReport:
    """Top-1 accuracy, per-class accuracy and ECE of ``model`` per condition (module docstring).

    Args:
        model: ``model(x)``, x (B, 3, H, W) in [0, 1] -> ``.logits`` (B, C) (or a (B, C) tensor).
        dataset: a map-style dataset or an iterable of items ``{"image", "label"[, "weather",
            "severity"]}``; ``dataset.classes`` (if any) names the C classes. Consecutive items of one
            image size are batched, ``batch_size`` at most.
        device: where the models run (None: where ``model`` is); they are moved there.
        restorer: if given, each image is restored first (module docstring), tiled with
            ``restore_tile`` / ``restore_overlap`` when larger than one window.
        progress: show a tqdm bar over the items.
    """
    run_on = prepare_model(model, device)
    if restorer is not None:
        prepare_model(restorer, run_on)
    states: dict[Condition, list] = {}
    classes: tuple[str, ...] | None = None
    restore_tiling = {"tile": restore_tile, "overlap": restore_overlap}
    start = time.perf_counter()
    with _inference(model, restorer), _progress(dataset, progress, "classify") as bar:
        for batch in _batches(_items(dataset), batch_size):
            images = torch.stack([_image(item) for item in batch])
            if restorer is not None:
                images = _restore_batch(restorer, images, device=run_on, **restore_tiling)
            probs = logits_of(model(images.to(run_on, model_dtype(model)))).double().softmax(1).cpu()
            classes = classes or _class_names(dataset, probs.shape[1])
            for item, p in zip(batch, probs, strict=True):
                states.setdefault(item_condition(item), []).append((p, int(item["label"])))
            bar.update(len(batch))
    stacked = {
        k: (torch.stack([p for p, _ in v]), torch.tensor([y for _, y in v])) for k, v in states.items()
    }
    counts = Counter({k: len(v) for k, v in states.items()})
    conventions = {
        "summary": f"top-1 accuracy; ECE with {ECE_BINS} equal-width confidence bins (l1)",
        "ece_bins": ECE_BINS,
        "restore_tiling": restore_tiling if restorer else None,
    }
    metrics = (_pool_classification, _classification_metrics)
    return _grouped(
        "classification",
        classes or (),
        stacked,
        counts,
        *metrics,
        conventions,
        _meta(start, run_on, restorer),
    )


# ---------------------------------------------------------------------------------------------- segmentation
def _pixel_confusion(logits: Tensor, mask: Tensor, ignore_index: int, name: str) -> Tensor:
    """(C, C) int64 CPU confusion matrix (rows: target) of the argmax of (C, H, W) ``logits``."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    mask = torch.as_tensor(mask)
    if mask.shape != logits.shape[-2:]:
        raise ValueError(f"item {name!r}: mask {tuple(mask.shape)} != image {tuple(logits.shape[-2:])}")
    preds = logits.argmax(0).flatten()
    target = mask.to(preds.device, torch.int64).flatten()
    return multiclass_confusion_matrix(preds, target, logits.shape[0], ignore_index=ignore_index).cpu()


def _segmentation_metrics(confusion: Tensor, classes: tuple[str, ...]) -> dict[str, Any]:
    """Per-class IoU, mIoU (over classes with a non-empty union) and pixel accuracy of a (C, C) matrix."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), math.nan)
    labelled = confusion.sum()
    return {
        "pixels": int(labelled),
        "miou": float(iou.nanmean()) if (union > 0).any() else math.nan,
        "pixel_accuracy": float(tp.sum() / labelled) if labelled > 0 else math.nan,
        "iou": dict(zip(classes, iou.tolist(), strict=True)),
        "confusion_matrix": confusion.long().tolist(),
    }


def _segment_item(
    model: nn.Module,
    item: dict,
    restorer: nn.Module | None,
    *,
    device: torch.device,
    restore_tiling: dict[str, int],
    tile: int,
    overlap: int,
    batch_size: int,
) -> Tensor:
    """(C, H, W) logits of ``item``'s image, restored first (tiled, clamped to [0, 1]) when a restorer is given."""
    image = _image(item)
    if restorer is not None:
        image = restore_tensor(restorer, image, device=device, batch_size=1, **restore_tiling).clamp(0, 1)
    return segment_logits(model, image, tile=tile, overlap=overlap, batch_size=batch_size, device=device)


def evaluate_segmenter(
    model: nn.Module,
    dataset: Iterable[dict],
    *,
    tile: int = 64,
    overlap: int = 16,
    batch_size: int = 16,
    device: str | torch.device | None = "cpu",
    restorer: nn.Module | None = None,
    restore_tile: int = 256,
    restore_overlap: int = 32,
    ignore_index: int = IGNORE_INDEX,
    progress: bool = False,
) -> RecognitionReport:
    """Per-class IoU, mIoU and pixel accuracy of ``model`` per condition (module docstring).

    Args:
        model: ``model(x)``, x (B, 3, h, w) in [0, 1] -> ``.logits`` (B, C, h, w) (or such a tensor).
        dataset: a map-style dataset or an iterable of items ``{"image", "mask"[, "weather",
            "severity"]}`` of any size, one at a time; ``dataset.classes`` (if any) names the classes.
        tile, overlap, batch_size: the segmenter's tiled inference (:func:`segment_logits`); ``tile``
            must be a multiple of its patch size. Memory: one image's (C, H, W) logits and a (C, C)
            confusion matrix per condition.
        device: where the models run (None: where ``model`` is).
        restorer, restore_tile, restore_overlap: restore each image first (tiled), then segment it.
        ignore_index: mask value of unlabelled pixels, left out of every metric.
    """
    run_on = prepare_model(model, device)
    if restorer is not None:
        prepare_model(restorer, run_on)
    matrices: dict[Condition, Tensor] = {}
    counts: Counter = Counter()
    classes: tuple[str, ...] | None = None
    restore_tiling = {"tile": restore_tile, "overlap": restore_overlap}
    tiling = {"tile": tile, "overlap": overlap, "batch_size": batch_size}
    start = time.perf_counter()
    with _inference(model, restorer), _progress(dataset, progress, "segment") as bar:
        for item in _items(dataset):
            logits = _segment_item(
                model, item, restorer, device=run_on, restore_tiling=restore_tiling, **tiling
            )
            classes = classes or _class_names(dataset, logits.shape[0])
            confusion = _pixel_confusion(logits, item["mask"], ignore_index, str(item.get("name", "")))
            del logits
            key = item_condition(item)
            matrices[key] = matrices[key] + confusion if key in matrices else confusion
            counts[key] += 1
            bar.update(1)
    conventions = {
        "summary": "per-class IoU from confusion matrices pooled over each group's pixels; mIoU over the "
        f"classes present in target or prediction; ignore_index {ignore_index} left out; tiled inference "
        f"{tile}px tiles, {overlap}px overlap",
        "ignore_index": ignore_index,
        "tiling": {"tile": tile, "overlap": overlap, "multiple_of": model_patch_size(model)},
        "restore_tiling": restore_tiling if restorer else None,
    }
    meta = _meta(start, run_on, restorer)
    return _grouped(
        "segmentation", classes or (), matrices, counts, sum, _segmentation_metrics, conventions, meta
    )


# ---------------------------------------------------------------------------------------------- restore, then recognise
def task_of(model: nn.Module) -> str:
    """``"segmentation"`` for a :class:`~mofme.models.ViTSegmenter`, ``"classification"`` for a
    :class:`~mofme.models.ViTClassifier`; ValueError otherwise."""
    from mofme.models.recognition import ViTClassifier, ViTSegmenter

    if isinstance(model, ViTSegmenter):
        return "segmentation"
    if isinstance(model, ViTClassifier):
        return "classification"
    raise ValueError(f"cannot tell the task of a {type(model).__name__}; pass task= {TASKS}")


def compare_with_restoration(
    model: nn.Module,
    dataset: Iterable[dict],
    restorer: nn.Module,
    *,
    task: str | None = None,
    **kwargs: Any,
) -> tuple[RecognitionReport, RecognitionReport]:
    """``(degraded, restored)``: ``model`` evaluated on the images as they are, then on the same images
    restored by ``restorer`` first. ``task``: one of ``TASKS`` (None: :func:`task_of`); ``kwargs`` go to
    :func:`evaluate_classifier` / :func:`evaluate_segmenter`. ``dataset`` is read twice."""
    task = task or task_of(model)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    evaluate = evaluate_classifier if task == "classification" else evaluate_segmenter
    return evaluate(model, dataset, **kwargs), evaluate(model, dataset, restorer=restorer, **kwargs)


def restoration_rows(
    degraded: RecognitionReport, restored: RecognitionReport
) -> list[tuple[str, int, float, float, float]]:
    """``(weather, images, clean, degraded, restored)`` scores per weather of both reports (not
    "clean"); clean = the degraded report's "clean" condition (nan without one)."""
    if degraded.task != restored.task:
        raise ValueError(f"the reports are of different tasks: {degraded.task} and {restored.task}")
    metric = degraded.metric
    clean = degraded.per_condition.get("clean", {}).get(metric, math.nan)
    weathers = [w for w in degraded.per_weather if w != "clean" and w in restored.per_weather]
    return [
        (
            w,
            degraded.per_weather[w]["images"],
            clean,
            degraded.per_weather[w][metric],
            restored.per_weather[w][metric],
        )
        for w in weathers
    ]


def restoration_table_markdown(degraded: RecognitionReport, restored: RecognitionReport) -> str:
    """Per weather type: the score on clean images, on degraded ones and on restored ones (%), the
    gain = restored - degraded (points, signed) and the share of the weather's drop (clean - degraded)
    it recovers; last row the mean over weather types."""
    rows = restoration_rows(degraded, restored)
    name = {"accuracy": "accuracy", "miou": "mIoU"}[degraded.metric]
    lines = [
        f"Restore, then recognise: {degraded.task} {name} (%) per weather type; gain = restored - degraded "
        "(points); recovered = gain / (clean - degraded).",
        "",
        "| weather | images | clean | degraded | restored | gain | recovered % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    if rows:
        means = [float(np.mean([r[i] for r in rows])) for i in (2, 3, 4)]
        rows.append(("**mean over weather types**", sum(r[1] for r in rows), *means))
    for weather, images, clean, before, after in rows:
        gain, drop = after - before, clean - before
        recovered = _percent(gain / drop) if drop > 0 else "n/a"
        lines.append(
            f"| {weather} | {images} | {_percent(clean)} | {_percent(before)} | {_percent(after)} | "
            f"{100 * gain:+.2f} | {recovered} |"
        )
    return "\n".join(lines) + "\n"
