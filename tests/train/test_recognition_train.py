"""`mofme train` for the recognition tasks, end to end on tiny settings (built-in tasks and a generated
Cityscapes tree): the recipe's loss (ignored pixels left out), model selection on the validation score,
and configuration errors that name the field."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from mofme.data import CITYSCAPES_CLASSES, IGNORE_INDEX
from mofme.data.builtin_tasks import DEGRADATION_CLASSES, SCENE_CLASSES, DegradationDataset, SceneDataset
from mofme.evaluate.recognition import evaluate_classifier, evaluate_segmenter
from mofme.models import ViTClassifier, ViTSegmenter, load_model
from mofme.train.config import ConfigError, load_config
from mofme.train.data import build_datasets, class_names
from mofme.train.recipes.recognition import SegmentationRecipe
from mofme.train.trainer import train

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


# ---------------------------------------------------------------------------------------------- Cityscapes / ACDC
SEGMENTER = ["task=segmentation", "model.name=segmenter_tiny", "model.ffn=dense"]


def test_ignored_pixels_are_left_out_of_the_loss(tmp_path):
    config = load_config(
        None,
        [*SEGMENTER, "data.type=cityscapes", "loss.label_smoothing=0.1", f"train.output_dir={tmp_path}"],
    )
    recipe = SegmentationRecipe(config)
    recipe.model = recipe._setup_model()
    recipe.net, recipe.criterion = recipe.model, recipe._setup_loss()
    recipe.autocast = torch.autocast("cpu", enabled=False)
    images = torch.rand(2, 3, 16, 24)
    mask = torch.randint(0, 19, (2, 16, 24))
    mask[:, :, 10:] = IGNORE_INDEX  # a band of unlabelled pixels
    loss, parts = recipe._loss({"image": images, "mask": mask})
    logits = recipe.model(images).logits
    labelled = mask != IGNORE_INDEX  # the same case with those pixels removed
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[labelled], mask[labelled], label_smoothing=0.1)
    assert parts["task"].item() == pytest.approx(expected.item(), rel=1e-6)
    other = mask.clone()
    other[~labelled] = 0  # the ignored band labelled after all: the loss must move
    assert recipe._loss({"image": images, "mask": other})[1]["task"].item() != pytest.approx(expected.item())
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.name=classifier_tiny", "task=classification"], "does not serve task 'classification'"),
        (["data.root=null"], "data.root is required for data.type='cityscapes'"),
        (["data.root=ROOT/absent"], r"(?s)data.root: .*folder not found: leftImg8bit/train"),
        (["data.beta=0.01"], "data.beta: beta must be None or, for variant 'foggy'"),
        (["data.variant=sunny"], "data.variant"),
        (["data.type=acdc", "data.conditions=[fog, haze]"], "data.conditions: conditions must be"),
        (["data.type=acdc"], r"(?s)data.root: .*folder not found: rgb_anon/fog/train"),
    ],
)
def test_cityscapes_and_acdc_config_errors_name_the_field(tmp_path, overrides, message):
    from tests.data.fixtures import cityscapes_tree

    root = cityscapes_tree(tmp_path, splits=("train",), cities=1, per_city=1, shape=(8, 8))
    given = [*SEGMENTER, "data.type=cityscapes", f"data.root={root}"]
    with pytest.raises(ConfigError, match=message):
        config = load_config(None, [*given, *(o.replace("ROOT", str(root)) for o in overrides)])
        build_datasets(config.data, seed=0)


def test_acdc_datasets_crop_for_training_and_keep_whole_conditioned_images_for_validation(tmp_path):
    from tests.data.fixtures import acdc_tree

    root = acdc_tree(tmp_path, conditions=("fog", "night"), per_condition=2, shape=(20, 40))
    config = load_config(
        None,
        [
            *SEGMENTER,
            "data.type=acdc",
            f"data.root={root}",
            "data.conditions=[night, fog]",
            "data.crop_size=16",
        ],
    )
    train_set, val_set = build_datasets(config.data, seed=0)
    assert class_names(config.data) == CITYSCAPES_CLASSES
    assert len(train_set) == len(val_set) == 4
    assert train_set[0]["image"].shape == (3, 16, 16) and train_set[0]["mask"].shape == (16, 16)
    assert val_set[0]["image"].shape == (3, 20, 40) and val_set.classes == CITYSCAPES_CLASSES
    assert [item["condition"] for item in val_set] == ["night", "night", "fog", "fog"]
    assert set(val_set[0]["mask"].unique().tolist()) <= {0, 1, 2, 8, 10, 13, IGNORE_INDEX}


def test_cli_trains_a_segmenter_on_a_cityscapes_tree(tmp_path, capsys):
    from mofme.cli import main
    from tests.data.fixtures import cityscapes_tree

    root = cityscapes_tree(tmp_path / "cityscapes")  # 2 cities x 2 frames of 64 x 128 per split
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "task: segmentation\nmodel: {name: segmenter_tiny, ffn: moe, num_experts: 4, top_k: 2}\n"
        f"data: {{type: cityscapes, root: {root}, crop_size: 32, batch_size: 2}}\n"
        "eval: {tile: 64, overlap: 16}\n"
    )
    output = tmp_path / "run"
    overrides = ["train.epochs=1", "train.progress=false", f"train.output_dir={output}"]
    assert main(["train", str(recipe), *overrides]) == 0
    assert "trained 2 steps" in capsys.readouterr().out  # 4 training images, batches of 2
    best = load_model(output / "best")
    assert isinstance(best, ViTSegmenter) and best.config.num_classes == len(CITYSCAPES_CLASSES)
    (record,) = _val_records(output)
    assert record["step"] == 2 and 0.0 <= record["miou_mean"] <= 1.0
    assert record["miou_all"] == record["miou_mean"]  # Cityscapes items have no condition: one group
