"""Recognition evaluation: accuracy / ECE and IoU against hand computations, grouping per condition,
tiled logits, the restore-then-recognise path, the report files and ``mofme eval`` on a recogniser."""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mofme.apps.plots import plot_restore_then_recognise
from mofme.evaluate.recognition import (
    compare_with_restoration,
    evaluate_classifier,
    evaluate_segmenter,
    restoration_table_markdown,
)
from mofme.infer.segment import segment_logits

IGNORE = 255


class Items(list):
    """A list of dataset items with the class names a dataset carries."""

    def __init__(self, items, classes):
        super().__init__(items)
        self.classes = tuple(classes)


class LookupClassifier(nn.Module):
    """Fixed logits per image, looked up by the image's mean (every test image is one constant)."""

    def __init__(self, table: dict[float, list[float]]):
        super().__init__()
        self.table = {round(k, 4): torch.tensor(v, dtype=torch.float32) for k, v in table.items()}

    def forward(self, image):
        keys = [round(float(m), 4) for m in image.mean(dim=(1, 2, 3))]
        return type("Output", (), {"logits": torch.stack([self.table[k] for k in keys])})()


class CleanLookup(nn.Module):
    """A restorer that returns the clean image of each degraded input it was given."""

    def __init__(self, items):
        super().__init__()
        self.pairs = [(item["image"], item["clean"]) for item in items]

    def forward(self, x):
        return torch.stack([next(c for d, c in self.pairs if torch.equal(d, image)) for image in x])


def metrics_of(report) -> dict:
    """The report's metrics as plain JSON data (nan as "nan", so that equal reports compare equal)."""
    data = json.loads(report.to_json())
    return {key: data[key] for key in ("score", "classes", "overall", "per_condition", "per_weather")}


class Identity(nn.Module):
    def forward(self, x):
        return x


# ---------------------------------------------------------------------------------------------- hand computations
def softmax(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def hand_classification(logits, labels, num_classes):
    """Accuracy, per-class accuracy (nan for absent classes) and ECE, written out with numpy."""
    probs = softmax(np.asarray(logits, np.float64))
    labels = np.asarray(labels)
    pred, conf = probs.argmax(1), probs.max(1)
    correct = (pred == labels).astype(np.float64)
    per_class = [correct[labels == c].mean() if (labels == c).any() else math.nan for c in range(num_classes)]
    bins = np.floor(conf * 15).astype(int)  # 15 equal-width bins [k/15, (k+1)/15); no confidence is 1
    ece = 0.0
    for b in np.unique(bins):
        inside = bins == b
        ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return correct.mean(), per_class, ece


def hand_confusion(preds, targets, num_classes):
    """Confusion matrix (rows: target) over the labelled pixels of every (pred, target) pair."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for pred, target in zip(preds, targets, strict=True):
        keep = target != IGNORE
        np.add.at(matrix, (target[keep], pred[keep]), 1)
    return matrix


def hand_iou(matrix):
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return iou, np.nanmean(iou), tp.sum() / matrix.sum()


# ---------------------------------------------------------------------------------------------- classification
CONDITIONS = [(-1, 0), (0, 1), (1, 2)]  # clean, rain/s1, snow/s2
SCENE_LOGITS = [  # per (scene, condition): logits over 4 classes; scene k has label k % 3 (class 3 never)
    [[2.0, 0.1, 0.3, -1.0], [0.4, 0.2, 0.5, 0.0], [1.2, 1.0, -0.5, 0.0]],
    [[0.1, 3.0, 0.0, 0.2], [1.5, 1.4, 0.0, -2.0], [0.0, 0.3, 0.2, 0.1]],
    [[0.0, 0.5, 1.7, 0.3], [0.0, 0.0, 0.9, 1.0], [0.6, 0.0, 0.8, 0.7]],
    [[1.1, 0.0, 0.2, 0.1], [0.2, 1.6, 0.0, 0.1], [0.5, 0.4, 0.1, 0.0]],
]


def scene_items(size_of=lambda condition: 4):
    """4 scenes x (clean, rain/s1, snow/s2) constant images; every image has its own mean value."""
    items, table = [], {}
    for scene, rows in enumerate(SCENE_LOGITS):
        clean_value = 0.05 + 0.1 * scene
        for c, ((weather, severity), logits) in enumerate(zip(CONDITIONS, rows, strict=True)):
            value = clean_value if weather == -1 else clean_value + 0.01 * (c + 1)
            size = size_of(c)
            items.append(
                {
                    "image": torch.full((3, size, size), value),
                    "clean": torch.full((3, size, size), clean_value),
                    "label": scene % 3,
                    "weather": weather,
                    "severity": severity,
                    "name": f"scene{scene}_{c}",
                }
            )
            table[value] = logits
    return Items(items, ["a", "b", "c", "d"]), LookupClassifier(table)


def test_classification_metrics_match_a_hand_computation():
    data, model = scene_items(size_of=lambda c: 4 + 2 * (c % 2))  # two image sizes: batches split
    report = evaluate_classifier(model, data, batch_size=3)
    logits = [row for rows in SCENE_LOGITS for row in rows]
    labels = [item["label"] for item in data]
    accuracy, per_class, ece = hand_classification(logits, labels, 4)
    assert report.task == "classification" and report.classes == ("a", "b", "c", "d")
    assert report.overall["images"] == 12
    assert report.overall["accuracy"] == pytest.approx(accuracy)
    assert report.score == pytest.approx(accuracy)
    assert report.overall["ece"] == pytest.approx(ece, abs=1e-6)
    got = [report.overall["per_class_accuracy"][c] for c in "abc"]
    assert got == pytest.approx(per_class[:3])
    assert math.isnan(report.overall["per_class_accuracy"]["d"])  # no item of class d
    assert report.overall["mean_class_accuracy"] == pytest.approx(np.nanmean(per_class))
    assert 0 < accuracy < 1 and ece > 0  # the case is not degenerate


def test_groups_per_condition_and_weather_and_the_pooled_overall():
    data, model = scene_items()
    report = evaluate_classifier(model, data, batch_size=5)
    assert list(report.per_condition) == ["clean", "rain/s1", "snow/s2"]
    assert list(report.per_weather) == ["clean", "rain", "snow"]
    for c, name in enumerate(report.per_condition):
        logits = [rows[c] for rows in SCENE_LOGITS]
        labels = [scene % 3 for scene in range(4)]
        accuracy, _, ece = hand_classification(logits, labels, 4)
        group = report.per_condition[name]
        assert group["images"] == 4
        assert group["accuracy"] == pytest.approx(accuracy) and group["ece"] == pytest.approx(ece, abs=1e-6)
        weather = name.split("/")[0]
        assert report.per_weather[weather]["accuracy"] == pytest.approx(accuracy)  # one severity each
    # overall pools the items: its ECE is not the mean of the groups' ECEs
    logits = [row for rows in SCENE_LOGITS for row in rows]
    accuracy, _, ece = hand_classification(logits, [i // 3 % 3 for i in range(12)], 4)
    assert report.overall["ece"] == pytest.approx(ece, abs=1e-6)
    assert report.overall["ece"] != pytest.approx(np.mean([g["ece"] for g in report.per_condition.values()]))


def test_items_without_weather_form_one_group():
    data, model = scene_items()
    plain = Items([{"image": it["image"], "label": it["label"]} for it in data], data.classes)
    report = evaluate_classifier(model, plain)
    assert list(report.per_condition) == ["all"] and list(report.per_weather) == ["all"]
    assert report.per_condition["all"]["accuracy"] == report.overall["accuracy"]


def test_an_identity_restorer_changes_nothing():
    data, model = scene_items()
    degraded, restored = compare_with_restoration(model, data, Identity(), task="classification")
    assert restored.meta["restorer"] == "Identity" and degraded.meta["restorer"] is None
    assert metrics_of(restored) == metrics_of(degraded)


def test_a_perfect_restorer_gives_the_clean_scores():
    data, model = scene_items()
    degraded, restored = compare_with_restoration(model, data, CleanLookup(data), task="classification")
    clean = degraded.per_condition["clean"]
    assert degraded.per_condition["rain/s1"]["accuracy"] != clean["accuracy"]  # weather matters here
    for name, group in restored.per_condition.items():
        for key in ("accuracy", "ece", "confusion_matrix"):
            assert group[key] == clean[key], (name, key)


def test_the_figure_and_the_comparison_table(tmp_path):
    data, model = scene_items()
    degraded, restored = compare_with_restoration(model, data, CleanLookup(data), task="classification")
    path = plot_restore_then_recognise(degraded, restored, tmp_path / "fig" / "restore.png")
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 0
    table = restoration_table_markdown(degraded, restored)
    for weather in ("rain", "snow"):
        gain = restored.per_weather[weather]["accuracy"] - degraded.per_weather[weather]["accuracy"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {weather} |"))
        assert f"{100 * gain:+.2f}" in row
    markdown = degraded.to_markdown()
    assert all(f"| {name} |" in markdown for name in [*degraded.per_condition, *degraded.per_weather])
    json_path, md_path = degraded.save(tmp_path / "report")
    saved = json.loads(json_path.read_text())
    assert saved["per_condition"]["rain/s1"]["accuracy"] == degraded.per_condition["rain/s1"]["accuracy"]
    assert saved["overall"]["per_class_accuracy"]["d"] == "nan"
    assert md_path.read_text() == markdown


# ---------------------------------------------------------------------------------------------- segmentation
class NearestLevel(nn.Module):
    """Per-pixel logits -50 (x - c / 3)^2 of the red channel x: class c = the nearest of 4 levels."""

    patch_size = 4

    def forward(self, image):
        levels = torch.arange(4, dtype=image.dtype).view(1, 4, 1, 1) / 3
        return type("Output", (), {"logits": -50 * (image[:, :1] - levels) ** 2})()


def seg_item(rng, height, width, weather, severity):
    """Red channel near levels 0, 1/3, 2/3 (class 3 is never predicted), masks with ignored pixels."""
    level = rng.integers(0, 3, (height, width))
    red = level / 3 + rng.uniform(-0.05, 0.05, (height, width))
    image = torch.from_numpy(
        np.stack([red, rng.random((height, width)), rng.random((height, width))])
    ).float()
    mask = np.where(rng.random((height, width)) < 0.7, level, rng.integers(0, 3, (height, width)))
    mask[rng.random((height, width)) < 0.15] = IGNORE
    return {"image": image, "mask": torch.from_numpy(mask), "weather": weather, "severity": severity}


@pytest.fixture
def seg_data():
    rng = np.random.default_rng(0)
    conditions = [(-1, 0), (2, 1), (2, 1), (2, 3)]  # clean, haze/s1 twice, haze/s3
    items = [seg_item(rng, 21 + 3 * i, 37 - 2 * i, w, s) for i, (w, s) in enumerate(conditions)]
    return Items(items, ["clean", "rain", "snow", "haze"])


def _preds(item):
    return (item["image"][0].numpy() * 3).round().astype(np.int64)


def test_segmentation_metrics_match_a_confusion_matrix_by_hand(seg_data):
    report = evaluate_segmenter(NearestLevel(), seg_data, tile=16, overlap=4)  # every image is tiled
    assert list(report.per_condition) == ["clean", "haze/s1", "haze/s3"]
    assert list(report.per_weather) == ["clean", "haze"]
    groups = {
        "overall": [0, 1, 2, 3],
        "clean": [0],
        "haze/s1": [1, 2],
        "haze/s3": [3],
        "haze": [1, 2, 3],
    }
    for name, members in groups.items():
        group = report.overall if name == "overall" else {**report.per_condition, **report.per_weather}[name]
        matrix = hand_confusion(
            [_preds(seg_data[i]) for i in members], [seg_data[i]["mask"].numpy() for i in members], 4
        )
        iou, miou, pixel_accuracy = hand_iou(matrix)
        assert group["confusion_matrix"] == matrix.tolist(), name
        assert group["miou"] == pytest.approx(miou) and group["pixel_accuracy"] == pytest.approx(
            pixel_accuracy
        )
        assert [group["iou"][c] for c in report.classes[:3]] == pytest.approx(iou[:3])
        assert math.isnan(group["iou"]["haze"])  # never in target or prediction: left out of the mIoU
        assert group["images"] == len(members) and group["pixels"] == matrix.sum()
    assert report.score == report.overall["miou"]
    assert 0.3 < report.score < 0.95  # neither trivial nor perfect


def test_ignored_pixels_do_not_count(seg_data):
    before = evaluate_segmenter(NearestLevel(), seg_data, tile=16, overlap=4)
    changed = Items([dict(item) for item in seg_data], seg_data.classes)
    for item in changed:
        ignored = item["mask"] == IGNORE
        image = item["image"].clone()
        image[0][ignored] = 1.0 - image[0][ignored]  # other predictions at the ignored pixels only
        item["image"] = image
    moved = sum(int((_preds(a) != _preds(b)).sum()) for a, b in zip(seg_data, changed, strict=True))
    assert moved > 0  # the predictions did change
    after = evaluate_segmenter(NearestLevel(), changed, tile=16, overlap=4)
    assert metrics_of(after) == metrics_of(before)


def test_tiled_logits_equal_the_untiled_ones_for_a_per_pixel_model():
    image = torch.rand(3, 45, 70)
    model = NearestLevel()
    tiled = segment_logits(model, image, tile=16, overlap=4)
    whole = model(image[None]).logits[0]
    assert tiled.shape == whole.shape == (4, 45, 70)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_segmentation_with_a_restorer(seg_data):
    degraded, restored = compare_with_restoration(
        NearestLevel(),
        seg_data,
        Identity(),
        task="segmentation",
        tile=16,
        overlap=4,
        restore_tile=16,
        restore_overlap=4,
    )
    assert metrics_of(restored) == metrics_of(degraded)
    assert "haze" in restoration_table_markdown(degraded, restored)


# ---------------------------------------------------------------------------------------------- command line
@pytest.fixture
def small_scenes(monkeypatch):
    """``mofme eval --data scenes`` on one crop per class (every condition still present)."""
    import mofme.data.builtin_tasks as tasks

    monkeypatch.setattr(tasks, "SceneDataset", functools.partial(tasks.SceneDataset, crops_per_class=1))


def test_cli_eval_of_a_classifier_on_scenes(tmp_path, small_scenes, capsys):
    from mofme.cli import main
    from mofme.models import create_model

    create_model("classifier_tiny", num_classes=11).save_pretrained(tmp_path / "model")
    out = tmp_path / "report"
    assert (
        main(["eval", "--checkpoint", str(tmp_path / "model"), "--data", "scenes", "--output", str(out)]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    conditions = ["clean"] + [f"{w}/s{s}" for w in ("rain", "snow", "haze", "raindrop") for s in (1, 2, 3)]
    assert list(metrics["per_condition"]) == conditions
    assert all(g["images"] == 11 for g in metrics["per_condition"].values())
    assert metrics["overall"]["images"] == 11 * 13 and metrics["meta"]["data"] == "scenes"
    assert "| rain/s2 |" in capsys.readouterr().out


def test_cli_refuses_restoration_on_the_degradation_task(tmp_path, capsys):
    from mofme.cli import main
    from mofme.models import create_model

    create_model("segmenter_tiny", num_classes=5).save_pretrained(tmp_path / "model")
    args = [
        "eval",
        "--checkpoint",
        str(tmp_path / "model"),
        "--data",
        "degradation",
        "--restore-with",
        "default",
    ]
    assert main([*args, "--output", str(tmp_path / "out")]) == 2
    assert "weather" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_restore_then_recognise_writes_both_reports_and_the_figure(tmp_path, small_scenes):
    from mofme.cli import main
    from mofme.models import create_model

    create_model("classifier_tiny", num_classes=11).save_pretrained(tmp_path / "model")
    create_model("restorer_tiny").save_pretrained(tmp_path / "restorer")  # faster than the shipped one
    out = tmp_path / "report"
    args = ["eval", "--checkpoint", str(tmp_path / "model"), "--data", "scenes"]
    args += ["--restore-with", str(tmp_path / "restorer")]
    assert main([*args, "--output", str(out)]) == 0
    degraded = json.loads((out / "degraded" / "metrics.json").read_text())
    restored = json.loads((out / "restored" / "metrics.json").read_text())
    assert degraded["meta"]["restorer"] is None and restored["meta"]["restorer"] == "Restorer"
    assert degraded["per_condition"]["clean"]["images"] == restored["per_condition"]["clean"]["images"] == 11
    table = (out / "restore_then_recognise.md").read_text()
    assert all(f"| {w} |" in table for w in ("rain", "snow", "haze", "raindrop"))
    with Image.open(out / "restore_then_recognise.png") as image:
        assert image.format == "PNG"


def test_cli_eval_of_a_classifier_on_an_image_folder(tmp_path, small_scenes, capsys):
    from mofme.cli import main
    from mofme.models import create_model

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(2):
            pixels = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{k}.png")
    create_model("classifier_tiny", num_classes=2).save_pretrained(tmp_path / "model")
    out = tmp_path / "report"
    args = ["eval", "--checkpoint", str(tmp_path / "model"), "--data", str(tmp_path / "data")]
    assert main([*args, "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classes"] == ["cat", "dog"] and list(metrics["per_condition"]) == ["all"]
    assert metrics["overall"]["images"] == 4
    assert main([*args, "--output", str(out), "--data", "scenes"]) == 2
    assert "predicts 2 classes but the data set has 11" in capsys.readouterr().err


def test_ignored_pixels_score_as_if_they_were_removed(seg_data):
    """A band of 255 labels gives the metrics of the same image cropped to its labelled part."""
    banded, cropped = [], []
    for item in seg_data:
        mask = item["mask"].clone()
        mask[mask == IGNORE] = 0  # every pixel labelled but the band
        width = mask.shape[1] - 9
        mask[:, width:] = IGNORE
        banded.append({"image": item["image"], "mask": mask})
        cropped.append({"image": item["image"][:, :, :width].clone(), "mask": mask[:, :width].clone()})
    banded, cropped = Items(banded, seg_data.classes), Items(cropped, seg_data.classes)
    whole = evaluate_segmenter(NearestLevel(), banded, tile=16, overlap=4)
    assert metrics_of(whole) == metrics_of(evaluate_segmenter(NearestLevel(), cropped, tile=16, overlap=4))
    labelled = sum(int((item["mask"] != IGNORE).sum()) for item in banded)
    assert whole.overall["pixels"] == labelled < sum(item["mask"].numel() for item in banded)


# ---------------------------------------------------------------------------------------------- Cityscapes / ACDC
@pytest.fixture
def city_segmenter(tmp_path):
    """An untrained 19-class segmenter, saved."""
    from mofme.models import create_model

    create_model("segmenter_tiny", num_classes=19, ffn="dense").save_pretrained(tmp_path / "segmenter")
    return tmp_path / "segmenter"


def test_cli_eval_of_a_segmenter_on_a_cityscapes_tree(tmp_path, city_segmenter):
    from mofme.cli import main
    from mofme.data import CITYSCAPES_CLASSES, cityscapes_train_ids, read_label
    from tests.data.fixtures import cityscapes_tree

    root = cityscapes_tree(tmp_path / "cityscapes", splits=("val",))
    out = tmp_path / "report"
    args = ["eval", "--checkpoint", str(city_segmenter), "--data", "cityscapes", "--root", str(root)]
    assert main([*args, "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    overall = metrics["overall"]
    assert metrics["classes"] == list(overall["iou"]) == list(CITYSCAPES_CLASSES)
    assert 0.0 <= overall["miou"] <= 1.0 and overall["images"] == 4
    assert list(metrics["per_condition"]) == ["all"] and metrics["meta"]["data"] == "cityscapes"
    labels = sorted((root / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))
    labelled = sum(int((cityscapes_train_ids(read_label(p)) != IGNORE).sum()) for p in labels)
    assert overall["pixels"] == labelled < 4 * 64 * 128  # the unlabeled id 0 is left out


def test_cli_eval_of_a_segmenter_on_acdc_reports_each_condition(tmp_path, city_segmenter):
    from mofme.cli import main
    from tests.data.fixtures import acdc_tree

    root = acdc_tree(tmp_path / "acdc", splits=("val",))
    out = tmp_path / "report"
    args = ["eval", "--checkpoint", str(city_segmenter), "--data", "acdc", "--root", str(root)]
    assert main([*args, "--output", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        sorted(metrics["per_condition"]) == sorted(metrics["per_weather"]) == ["fog", "night", "rain", "snow"]
    )
    assert all(group["images"] == 1 for group in metrics["per_condition"].values())
    assert metrics["overall"]["images"] == 4


def test_cli_eval_of_cityscapes_errors(tmp_path, city_segmenter, capsys):
    from mofme.cli import main
    from mofme.models import create_model
    from tests.data.fixtures import cityscapes_tree

    root = cityscapes_tree(tmp_path / "cityscapes", splits=("val",), cities=1, per_city=1)
    create_model("classifier_tiny", num_classes=19).save_pretrained(tmp_path / "classifier")
    base = ["eval", "--data", "cityscapes", "--output", str(tmp_path / "out")]
    cases = [
        (["--checkpoint", str(tmp_path / "classifier"), "--root", str(root)], "is a segmentation task"),
        (["--checkpoint", str(city_segmenter)], "needs --root"),
        (["--checkpoint", str(city_segmenter), "--root", str(root), "--split", "test"], "leftImg8bit/test"),
        (["--checkpoint", str(city_segmenter), "--root", str(root), "--data", "acdc", "--variant", "foggy"],
         "--variant applies to --data cityscapes only"),
    ]  # fmt: skip
    for args, message in cases:
        assert main([*base, *args]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
