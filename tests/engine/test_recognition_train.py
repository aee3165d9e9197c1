"""`mofme train` for the recognition tasks, end to end on tiny settings: the recipe's loss, model
selection on the validation score, and configuration errors that name the field."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from mofme.data.builtin_tasks import DEGRADATION_CLASSES, SCENE_CLASSES, DegradationDataset, SceneDataset
from mofme.engine.config import ConfigError, load_config
from mofme.engine.recognition import evaluate_classifier, evaluate_segmenter
from mofme.engine.recognition_recipes import SegmentationRecipe
from mofme.engine.trainer import train
from mofme.models import ViTClassifier, ViTSegmenter, load_model

TRAIN = ["train.epochs=4", "train.eval_every=2", "train.checkpoint_every=100", "train.progress=false"]
MOE = ["model.ffn=moe", "model.num_experts=4", "model.top_k=2"]


def _val_records(output) -> list[dict]:
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "val"]


def test_classification_trains_and_keeps_the_most_accurate_model(tmp_path):
    overrides = [
        *TRAIN,
        *MOE,
        "data.samples_per_epoch=32",
        "data.batch_size=16",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    result = train(load_config("configs/scenes_vit.yaml", overrides))
    assert result.metric == "accuracy" and result.steps == 8
    best = load_model(result.best_dir)
    assert isinstance(best, ViTClassifier) and best.config.num_classes == len(SCENE_CLASSES)
    records = _val_records(tmp_path / "run")
    assert [r["step"] for r in records] == [4, 8]
    assert result.best_score == max(r["accuracy_mean"] for r in records)
    rescored = evaluate_classifier(best, SceneDataset("val"))  # the saved model scores what was logged
    assert rescored.score == pytest.approx(result.best_score)
    saved = json.loads((result.best_dir / "metrics.json").read_text())
    assert saved["val_accuracy"]["mean"] == pytest.approx(result.best_score)


def test_segmentation_trains_on_degradation_masks_and_scores_miou(tmp_path):
    overrides = [
        *TRAIN,
        *MOE,
        "data.samples_per_epoch=16",
        "data.batch_size=8",
        "data.weathers=[rain]",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    result = train(load_config("configs/degradation_vit.yaml", overrides))
    assert result.metric == "miou" and result.steps == 8
    best = load_model(result.best_dir)
    assert isinstance(best, ViTSegmenter) and best.config.num_classes == len(DEGRADATION_CLASSES)
    rescored = evaluate_segmenter(best, DegradationDataset("val", weathers=("rain",)), tile=64, overlap=16)
    assert rescored.score == pytest.approx(result.best_score)


def test_segmentation_loss_is_weighted_cross_entropy_plus_the_aux_loss(tmp_path):
    weights = [1.0, 5.0, 2.0, 0.5, 3.0]
    config = load_config(
        "configs/degradation_vit.yaml",
        [*MOE, f"loss.class_weights={weights}", f"train.output_dir={tmp_path}"],
    )
    recipe = SegmentationRecipe(config)
    recipe.model = recipe._setup_model()
    recipe.net, recipe.criterion = recipe.model, recipe._setup_loss()
    recipe.autocast = torch.autocast("cpu", enabled=False)
    items = [DegradationDataset("train", samples_per_epoch=4, clean_fraction=0.0)[i] for i in range(4)]
    batch = {key: torch.stack([item[key] for item in items]) for key in ("image", "mask")}
    loss, parts = recipe._loss(batch)
    output = recipe.model(batch["image"])
    expected = F.cross_entropy(output.logits, batch["mask"], weight=torch.tensor(weights))
    assert parts["task"] == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(expected.item() + output.aux_loss.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.type=builtin"], "does not serve task 'classification'"),
        (["model.name=segmenter_tiny"], "classifier_"),
        (["model.name=null"], "needs model.name"),
        (["model.nonsense=1"], "nonsense"),
    ],
)
def test_recognition_config_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/scenes_vit.yaml", overrides)


def test_class_count_and_class_weights_must_match_the_data(tmp_path):
    wrong = load_config("configs/scenes_vit.yaml", ["model.num_classes=5", f"train.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"num_classes is 5 .* 11 classes"):
        train(wrong)
    weights = load_config(
        "configs/degradation_vit.yaml", ["loss.class_weights=[1, 2]", f"train.output_dir={tmp_path / 'b'}"]
    )
    with pytest.raises(ConfigError, match="class_weights has 2 entries for 5 classes"):
        train(weights)
