"""The YAML ``model:`` section: one spelling (``name:`` + the entry's fields), the old ones read with a
warning, every registered model checked against its own config class; shipped weights by tagged name."""

import pytest
import torch
import yaml

from mofme.configs import recipe_path
from mofme.models import DEFAULT_WEIGHTS, create_model, list_models, list_pretrained, load_model, model_config
from mofme.train.config import Config, ConfigError, load_config


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_what_its_config_says(name):
    fields = {"dropout": 0.0} if "dropout" in model_config(name).__dataclass_fields__ else {}
    assert create_model(name, **fields).config == model_config(name, **fields)


def test_a_field_the_model_lacks_is_named_with_the_closest_one():
    with pytest.raises(ConfigError, match=r"has no field top_kk \(did you mean top_k\?\)"):
        load_config(None, ["model.top_kk=2"])
    with pytest.raises(ConfigError, match="did you mean restorer_small"):
        load_config(None, ["model.name=restorer_smal"])


def test_preset_is_read_as_the_restorer_name_with_a_warning():
    with pytest.warns(FutureWarning, match="write model.name: restorer_tiny"):
        old = load_config(None, ["model.preset=tiny", "model.top_k=1"])
    new = load_config(None, ["model.name=restorer_tiny", "model.top_k=1"])
    assert old.model.resolved() == new.model.resolved()
    assert old.model.resolved() != load_config(None, ["model.top_k=1"]).model.resolved()  # not the default
    dumped = yaml.safe_load(old.to_yaml())["model"]
    assert dumped["name"] == "restorer_tiny" and "preset" not in dumped


def test_preset_beside_a_recognizer_name_is_ignored_as_before():
    path = recipe_path("scenes_vit")  # name: classifier_tiny
    with pytest.warns(FutureWarning):
        config = load_config(path, ["model.preset=small"])
    assert config.model.name == load_config(path).model.name


def test_overrides_mapping_is_read_as_fields_with_a_warning(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"model": {"preset": "tiny", "overrides": {"num_experts": 4}}}))
    with pytest.warns(FutureWarning, match="model.overrides"):
        config = load_config(path)
    assert (config.model.name, config.model.resolved().num_experts) == ("restorer_tiny", 4)


def test_a_run_saved_with_the_old_spelling_is_the_same_run():
    config = load_config(recipe_path("weather_gate_fixed"))
    saved = yaml.safe_load(config.to_yaml())
    saved["model"] = {"preset": "small", "name": None, **config.model.fields}  # as runs saved it before
    with pytest.warns(FutureWarning):
        assert config.same_as(yaml.safe_dump(saved))
    saved["model"]["top_k"] = 4
    with pytest.warns(FutureWarning):
        assert not config.same_as(yaml.safe_dump(saved))
    assert isinstance(config, Config)


def test_shipped_weights_load_by_tagged_name():
    assert list_pretrained("restorer_small.*")[0] == "restorer_small.weather_gated"  # the default tag first
    default = create_model("restorer_small", pretrained=True)
    base = create_model("restorer_small.weather", pretrained=True)
    assert default.config == load_model(DEFAULT_WEIGHTS).config and default.config.presence_gate
    assert not base.config.presence_gate
    for name, tensor in load_model("mofme-small-weather").state_dict().items():
        torch.testing.assert_close(base.state_dict()[name], tensor, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"restorer_small\.weather_gated"):
        create_model("restorer_small.sunny", pretrained=True)
    with pytest.raises(ValueError, match="no pretrained weights ship"):
        create_model("restorer_tiny", pretrained=True)


def test_a_model_is_built_from_its_checked_config_or_from_keywords_not_both():
    from mofme.models import Restorer, ViTSegmenter

    config = model_config("restorer_tiny", top_k=1)
    model = Restorer(config)
    assert model.config is config and model.config == create_model("restorer_tiny", top_k=1).config
    assert Restorer(**vars(config)).config == config
    with pytest.raises(TypeError, match="not both"):
        Restorer(config, top_k=2)
    with pytest.raises(TypeError, match="expected a RestorerConfig"):
        Restorer(model_config("segmenter_tiny"))
    assert ViTSegmenter(model_config("segmenter_tiny", num_classes=5)).config.num_classes == 5
    with pytest.raises(ValueError, match="no field num_clases"):
        create_model("segmenter_tiny", num_clases=5)
