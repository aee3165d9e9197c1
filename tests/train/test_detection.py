"""The lens-drop detector's training task (task: drop_detection): the loss of a batch, the IoU
validation score against scikit-learn, a whole run selecting its best model, and a restorer taking
the trained detector as its drop_head (train.init_parts)."""

import json

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import jaccard_score

from mofme.data import WEATHER_TYPES
from mofme.data.builtin import BuiltinWeatherDataset
from mofme.losses import drop_mask_loss, drop_targets
from mofme.models import build_restorer, create_model, load_model
from mofme.train.config import ConfigError, load_config
from mofme.train.recipes.drop_detection import drop_iou
from mofme.train.recipes.restoration import RestorationRecipe
from mofme.train.trainer import recipe_class, train

DETECTOR = {
    "task": "drop_detection",
    "model": {"name": "drop_detector", "widths": [4, 8]},
    "data": {"type": "builtin", "crop_size": 32, "batch_size": 4, "samples_per_epoch": 16},
    "optim": {"lr": 1e-3, "warmup_epochs": 1},
    "train": {"epochs": 2, "checkpoint_every": 4, "eval_every": 1, "log_every": 1, "progress": False},
}


def _config(tmp_path, name="detector", **sections):
    raw = {**DETECTOR, **sections}
    raw["train"] = {**raw["train"], "output_dir": str(tmp_path / name)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_iou_matches_scikit_learn_and_counts_false_alarms():
    torch.manual_seed(0)
    detector = create_model("drop_detector", widths=[4, 8]).eval()
    torch.nn.init.normal_(detector.out.weight, std=0.5)
    val = BuiltinWeatherDataset("val", weathers=("raindrop", "snow"), seed=0)
    with torch.no_grad():  # a detector that flags about half of the pixels
        detector.out.bias -= detector(val[0]["input"][None]).median()
    flagged, targets, drops = [], [], []
    with torch.no_grad():
        for item in val:
            flag = (torch.sigmoid(detector(item["input"][None])) > 0.5).flatten().numpy()
            target = (drop_targets(item["particles"][None], torch.tensor([item["weather"]])) > 0.5).flatten()
            flagged.append(flag)
            targets.append(target.numpy())
            drops.append(np.full(flag.shape, item["weather"] == WEATHER_TYPES.index("raindrop")))
    flagged, targets, drops = map(np.concatenate, (flagged, targets, drops))
    assert 0.05 < flagged.mean() < 0.95 and targets.any()
    scores = drop_iou(detector, val)
    assert scores["mean"] == pytest.approx(jaccard_score(targets, flagged), abs=1e-6)
    assert scores["raindrop"] == pytest.approx(jaccard_score(targets[drops], flagged[drops]), abs=1e-6)
    assert scores["mean"] < scores["raindrop"]  # what it flags on snow renders counts against it


def test_a_batch_loss_is_the_drop_mask_loss(tmp_path):
    recipe = recipe_class("drop_detection")(_config(tmp_path)).setup()
    batch = next(iter(recipe._loader(0, 0)))
    loss, parts = recipe._loss(batch)
    loss = loss.detach()
    with torch.no_grad():
        expected = drop_mask_loss(
            recipe.net(batch["input"]), drop_targets(batch["particles"], batch["weather"])
        )
    assert float(loss) == pytest.approx(float(expected), rel=1e-6) and set(parts) == {"task"}


def test_a_run_keeps_the_detector_with_the_best_validation_iou(tmp_path):
    result = train(_config(tmp_path))
    assert result.metric == "iou" and result.steps == 8
    scores = [json.loads(line) for line in (tmp_path / "detector" / "log.jsonl").read_text().splitlines()]
    val = [entry["iou_mean"] for entry in scores if entry["kind"] == "val"]
    assert len(val) == 2 and result.best_score == pytest.approx(max(val))
    best = load_model(result.best_dir)
    assert type(best).__name__ == "DropDetector" and best.config.widths == (4, 8)


def test_a_restorer_takes_a_saved_detector_as_its_drop_head(tmp_path):
    detector = create_model("drop_detector")
    with torch.no_grad():
        for parameter in detector.parameters():
            parameter.add_(torch.randn_like(parameter))
    detector.save_pretrained(tmp_path / "detector")
    build_restorer(preset="tiny", ffn="dense").save_pretrained(tmp_path / "restorer")
    restoration = {
        "model": {"name": "restorer_tiny", "ffn": "dense", "drop_fill": True},
        "data": {"type": "builtin", "crop_size": 32, "batch_size": 4, "samples_per_epoch": 16},
        "loss": {"drop_mask_weight": 0.5},
    }
    parts = {"drop_head": str(tmp_path / "detector")}
    train_section = {"init_from": str(tmp_path / "restorer"), "init_parts": parts, "progress": False}
    config = _config(
        tmp_path, "fill", task="restoration", train={**DETECTOR["train"], **train_section}, **restoration
    )
    model = RestorationRecipe(config).setup().model
    for name, tensor in detector.state_dict().items():
        assert torch.equal(model.drop_head.state_dict()[name], tensor), name
    bad = {**train_section, "init_parts": {"drop_haed": str(tmp_path / "detector")}}
    config = _config(tmp_path, "bad", task="restoration", train={**DETECTOR["train"], **bad}, **restoration)
    with pytest.raises(ConfigError, match=r"init_parts.*drop_haed"):
        RestorationRecipe(config).setup()
