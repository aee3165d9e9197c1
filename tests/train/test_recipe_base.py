"""A recipe may name the recipe it changes (``base: other.yaml``): the base's sections first, this
file's keys merged onto them (lists and scalars replace), relative to this file's folder."""

from pathlib import Path

import pytest
import yaml

from mofme.configs import recipe_path
from mofme.train.config import ConfigError, load_config, read_recipe

PARENT = {
    "model": {"name": "restorer_small", "ffn": "mofme", "num_experts": 8},
    "data": {"type": "builtin", "weathers": ["rain", "snow"], "batch_size": 2},
    "train": {"epochs": 3, "seed": 7},
}


def _write(path: Path, mapping: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def test_a_child_changes_only_the_keys_it_names_and_lists_replace(tmp_path):
    _write(tmp_path / "parent.yaml", PARENT)
    child = _write(
        tmp_path / "child.yaml",
        {"base": "parent.yaml", "data": {"weathers": ["haze"]}, "train": {"epochs": 5}},
    )
    config = load_config(child)
    assert config.data.weathers == ["haze"]  # replaced, not appended to
    assert config.train.epochs == 5
    assert (config.train.seed, config.data.batch_size, config.model.fields["num_experts"]) == (7, 2, 8)


def test_a_base_is_found_relative_to_the_recipe_and_chains(tmp_path):
    _write(tmp_path / "a" / "grand.yaml", PARENT)
    _write(tmp_path / "a" / "b" / "parent.yaml", {"base": "../grand.yaml", "train": {"seed": 11}})
    child = _write(tmp_path / "child.yaml", {"base": "a/b/parent.yaml", "train": {"epochs": 9}})
    raw = read_recipe(child)
    assert "base" not in raw
    assert raw["train"] == {"epochs": 9, "seed": 11}
    assert raw["model"] == PARENT["model"]


def test_overrides_apply_after_the_whole_chain(tmp_path):
    _write(tmp_path / "parent.yaml", PARENT)
    child = _write(tmp_path / "child.yaml", {"base": "parent.yaml", "train": {"epochs": 5}})
    assert load_config(child, ["train.epochs=2"]).train.epochs == 2


def test_a_cycle_of_bases_is_refused_naming_the_files(tmp_path):
    _write(tmp_path / "one.yaml", {"base": "two.yaml", **PARENT})
    _write(tmp_path / "two.yaml", {"base": "one.yaml"})
    with pytest.raises(ConfigError, match=r"one\.yaml -> .*two\.yaml -> .*one\.yaml"):
        load_config(tmp_path / "one.yaml")


@pytest.mark.parametrize(
    ("base", "message"),
    [("missing.yaml", r"config file not found: .*missing\.yaml"), (["a.yaml"], r"child\.yaml: base must be")],
)
def test_a_bad_base_is_refused_naming_it(tmp_path, base, message):
    child = _write(tmp_path / "child.yaml", {"base": base, "train": {"epochs": 5}})
    with pytest.raises(ConfigError, match=message):
        load_config(child)


@pytest.mark.parametrize("name", ["weather_unet_local_more", "weather_unet_local_share"])
def test_the_shipped_continuations_keep_their_base_and_change_what_they_say(name):
    """The series of `restorer_unet_local` runs: each names the run it changes and keeps the rest."""
    child = load_config(recipe_path(name))
    first = load_config(recipe_path("weather_unet_local"))
    assert child.model == first.model
    assert child.data.families == first.data.families and child.data.val_families == first.data.val_families
    assert child.train.output_dir != first.train.output_dir
    assert child.train.init_from is not None


def test_the_gpu_burst_trains_the_sixth_run_from_scratch_with_nothing_outside_the_repository():
    """The burst runs on a bare machine: no `init_from` or `init_parts` naming weights of a run."""
    burst = load_config(recipe_path("weather_unet_local_gpu"))
    first = load_config(recipe_path("weather_unet_local"))
    assert burst.model == first.model and burst.loss == first.loss
    assert burst.data.families == first.data.families and burst.data.val_families == first.data.val_families
    assert burst.train.init_from is None and not burst.train.init_parts
    assert burst.data.batch_size > first.data.batch_size and burst.train.output_dir != first.train.output_dir
