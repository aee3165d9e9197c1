"""Every shipped YAML recipe loads, and builds the model it describes."""

import pytest
import torch

from mofme.configs import recipe_path, recipes
from mofme.models import DEFAULT_WEIGHTS
from mofme.models.hub import check_state_dict
from mofme.train.config import load_config


def test_recipes_are_shipped():
    assert {"demo_cpu", "allweather_paper_dense", "allweather_paper_moe", "allweather_paper_mofme"} <= set(
        recipes()
    )


@pytest.mark.parametrize("name", recipes())
def test_recipe_loads_and_builds(name):
    config = load_config(recipe_path(name))
    with torch.device("meta"):
        model = config.model.build()
    for name, value in config.model.fields.items():  # every field the recipe sets reaches the model
        assert getattr(model.config, name) == (value or None if name.endswith("_kwargs") else value), name


@pytest.mark.parametrize("name", recipes())
def test_recipe_opens_with_the_comment_that_explains_it(name):
    """A recipe says what it is for before its first key (a rewrite once dropped these headers)."""
    lines = recipe_path(name).read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert len(header) >= 2 and header[0].startswith("# "), name


def test_paper_recipes_carry_the_published_optimisation():
    for ffn in ("dense", "moe", "mofme"):
        config = load_config(recipe_path(f"allweather_paper_{ffn}"))
        assert (config.optim.lr, config.optim.weight_decay, config.optim.warmup_epochs) == (4e-4, 0.01, 3)
        assert (config.data.crop_size, config.train.epochs, config.loss.perceptual_weight) == (240, 200, 0.04)
        assert config.model.name == "restorer_paper"


def test_unknown_recipe_names_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="demo_cpu"):
        recipe_path("no_such_recipe")


def test_fine_tuning_recipes_start_from_the_model_another_recipe_trains():
    configs = {name: load_config(recipe_path(name)) for name in recipes()}
    best_dirs = {f"{config.train.output_dir}/best": name for name, config in configs.items()}
    best_dirs["mofme-small-weather"] = "pretrained_small_fill"  # shipped weights: that recipe's best
    best_dirs[DEFAULT_WEIGHTS] = "weather_gate_fixed"
    stages = {name: config for name, config in configs.items() if config.train.init_from}
    assert {"pretrained_small_drops", "pretrained_small_fill"} <= set(stages)
    for name, config in stages.items():
        sources = {"": config.train.init_from, **config.train.init_parts}
        model = config.model.build()
        for part, source in sources.items():
            parent = best_dirs.get(source)
            assert parent is not None, f"{name}: {part or 'init_from'} {source} is no recipe's best model"
            # the parent's weights load: the same architecture, less the parts loaded from elsewhere
            check_state_dict(
                model.get_submodule(part),
                configs[parent].model.build().state_dict(),
                source=f"{name}: {source}",
                new_modules=[*config.train.init_parts, *config.train.init_new] if not part else (),
            )
