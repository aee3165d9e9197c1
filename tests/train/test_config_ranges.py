"""Configs are range-checked when loaded, before any work, and mistyped keys get a suggestion."""

import re

import pytest
import yaml

from mofme.configs import recipe_path
from mofme.train.config import ConfigError, load_config

OUT_OF_RANGE = {  # override -> what the error says
    "train.epochs=-5": "train.epochs: Input should be greater than or equal to 1",
    "train.epochs=0": "train.epochs: Input should be greater than or equal to 1",
    "train.eval_every=0": "train.eval_every: Input should be greater than or equal to 1",
    "train.checkpoint_every=0": "train.checkpoint_every: Input should be greater than or equal to 1",
    "train.log_every=0": "train.log_every: Input should be greater than or equal to 1",
    "train.keep_checkpoints=0": "train.keep_checkpoints: Input should be greater than or equal to 1",
    "train.max_minutes=0": "train.max_minutes: Input should be greater than 0",
    "train.ema_decay=1.0": "train.ema_decay: Input should be less than 1",
    "train.ema_decay=0": "train.ema_decay: Input should be greater than 0",
    "data.batch_size=0": "data.batch_size: Input should be greater than or equal to 1",
    "data.crop_size=0": "data.crop_size: Input should be greater than or equal to 1",
    "data.samples_per_epoch=0": "data.samples_per_epoch: Input should be greater than or equal to 1",
    "data.num_workers=-1": "data.num_workers: Input should be greater than or equal to 0",
    "data.long_sides=[256, 4]": "data.long_sides.1: Input should be greater than or equal to 8",
    "data.val_fraction=1.0": "data.val_fraction: Input should be less than 1",
    "optim.lr=0": "optim.lr: Input should be greater than 0",
    "optim.min_lr=-1e-6": "optim.min_lr: Input should be greater than or equal to 0",
    "optim.betas=[0.9, 1.0]": "optim.betas.1: Input should be less than 1",
    "optim.weight_decay=-0.1": "optim.weight_decay: Input should be greater than or equal to 0",
    "optim.grad_clip=0": "optim.grad_clip: Input should be greater than 0",
    "optim.warmup_epochs=-1": "optim.warmup_epochs: Input should be greater than or equal to 0",
    "loss.smooth_l1_beta=0": "loss.smooth_l1_beta: Input should be greater than 0",
    "loss.perceptual_weight=-1": "loss.perceptual_weight: Input should be greater than or equal to 0",
    "eval.tile=0": "eval.tile: Input should be greater than or equal to 1",
    "eval.overlap=-1": "eval.overlap: Input should be greater than or equal to 0",
    "eval.crop_border=-1": "eval.crop_border: Input should be greater than or equal to 0",
    "model.num_experts=0": "model: num_experts must be a positive integer, got 0",
    "model.top_k=0": "model: top_k must be in [1, num_experts=16], got 0",
    "model.top_k=17": "model: top_k must be in [1, num_experts=16], got 17",
    "model.window_size=0": "model: window_size must be None or a positive integer, got 0",
}


@pytest.mark.parametrize(("override", "message"), list(OUT_OF_RANGE.items()))
def test_an_out_of_range_number_is_refused_at_load_naming_the_field(override, message):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [override])
    assert str(raised.value) == f"defaults: {message}"


def test_the_bounds_themselves_are_accepted():
    config = load_config(
        None,
        [
            "train.epochs=1",
            "train.eval_every=1",
            "train.checkpoint_every=1",
            "train.log_every=1",
            "optim.warmup_epochs=0",
            "optim.min_lr=0",
            "optim.betas=[0.0, 0.999]",
            "optim.grad_clip=null",
            "eval.overlap=0",
            "model.num_experts=1",
            "model.top_k=1",
        ],
    )
    assert (config.train.epochs, config.model.fields["top_k"]) == (1, 1)


@pytest.mark.parametrize(
    "name", ["demo_cpu", "allweather_paper_mofme", "scenes_vit", "degradation_vit", "weather_families"]
)
def test_the_shipped_recipes_are_within_range(name):
    load_config(recipe_path(name))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown field train.epoch; did you mean train.epochs?"),
        ("trian.epochs=3", "unknown field trian; did you mean train?"),
        ("optim.weight_decy=0", "unknown field optim.weight_decy; did you mean optim.weight_decay?"),
        ("data.folders=[{pth: a}]", "unknown field data.folders.0.pth; did you mean data.folders.0.path?"),
    ],
)
def test_a_mistyped_key_gets_the_closest_field(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_a_mistyped_yaml_key_gets_the_closest_field_and_a_far_one_the_section_fields(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("train:\n  eval_evry: 2\n  zzzz: 1\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: unknown field train.eval_evry; did you mean train.eval_every?")
    assert "unknown field train.zzzz; known: epochs, max_minutes, eval_every" in message


def test_a_mistyped_model_field_gets_the_closest_one():
    with pytest.raises(ConfigError, match=r"no field num_expert \(did you mean num_experts\?\)"):
        load_config(None, ["model.num_expert=4"])


def test_mofme_train_refuses_a_bad_number_before_writing_anything(tmp_path, capsys):
    from mofme.cli import main

    output = tmp_path / "run"
    assert main(["train", "demo_cpu", "train.epochs=-5", f"train.output_dir={output}"]) == 2
    assert "train.epochs: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    ("recipe", "override", "task"),
    [
        ("weather_gate_fixed", "loss.class_weights=[1.0, 2.0]", "restoration"),
        ("weather_gate_fixed", "loss.label_smoothing=0.1", "restoration"),
        ("scenes_vit", "loss.particle_weight=4.0", "classification"),
        ("drop_detector", "loss.smooth_l1_beta=0.01", "drop_detection"),
    ],
)
def test_a_loss_field_of_another_task_is_a_schema_error(recipe, override, task):
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]} is not a field of the {task} loss"):
        load_config(recipe_path(recipe), [override])


def test_each_task_reads_its_own_loss_section_and_old_full_dumps_still_load():
    for recipe, task in [
        ("weather_gate_fixed", "restoration"),
        ("scenes_vit", "classification"),
        ("drop_detector", "drop_detection"),
    ]:
        config = load_config(recipe_path(recipe))
        assert (
            config.task == task and set(config.loss.model_dump()) - NEWER_LOSS_FIELDS < OLD_FLAT_LOSS_FIELDS
        )
        saved = yaml.safe_load(config.to_yaml())
        saved["loss"] = {**OLD_FLAT_LOSS_DEFAULTS, **saved["loss"]}  # runs saved every field before
        assert config.same_as(yaml.safe_dump(saved))
        saved["loss"][next(iter(saved["loss"].keys() - config.loss.model_dump().keys()))] = 0.5
        assert not config.same_as(yaml.safe_dump(saved))  # another task's field, set: not the same run


OLD_FLAT_LOSS_DEFAULTS = {  # the one flat loss section before it was typed by task, at its defaults
    "label_smoothing": 0.0,
    "class_weights": None,
    "smooth_l1_beta": 1.0,
    "perceptual_weight": 0.0,
    "vgg_weights": None,
    "weather_mi": 0.0,
    "weather_groups": 0.0,
    "particle_weight": 0.0,
    "drop_mask_weight": 0.0,
    "presence_weight": 0.0,
    "drop_pos_weight": 1.0,
}
OLD_FLAT_LOSS_FIELDS = set(OLD_FLAT_LOSS_DEFAULTS)
NEWER_LOSS_FIELDS = {"extra", "pixel", "psnr_cap"}  # added since; a run saved before has their defaults
