"""Issue 28: training a presence-gated restorer: the gate's loss term against its formula, new
modules fine-tuned onto saved weights (train.init_new), and the config errors."""

import pytest
import torch
import torch.nn.functional as F
import yaml

from mofme.losses import presence_targets
from mofme.models import create_model
from mofme.train.config import ConfigError, load_config
from mofme.train.recipes.restoration import RestorationRecipe

MODEL = {"name": "restorer_tiny", "ffn": "dense", "residual": True}


def _config(tmp_path, name, *, model, loss, train=None):
    raw = {
        "model": model,
        "data": {"type": "builtin", "crop_size": 32, "batch_size": 4, "samples_per_epoch": 8},
        "loss": loss,
        "train": {"epochs": 1, "progress": False, "output_dir": str(tmp_path / name), **(train or {})},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def test_gated_fine_tune_keeps_the_saved_weights_and_adds_the_gate_loss(tmp_path):
    torch.manual_seed(0)
    saved = create_model(**MODEL)
    saved.save_pretrained(tmp_path / "saved")
    gated = {**MODEL, "presence_gate": True, "global_context": True}
    train = {
        "init_from": str(tmp_path / "saved"),
        "init_new": ["presence_head", "context", "context_bias", "context_gate"],
    }
    config = _config(tmp_path, "gate", model=gated, loss={"presence_weight": 0.5}, train=train)
    recipe = RestorationRecipe(config).setup()
    model = recipe.model
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    batch = next(iter(recipe._loader(0, 0)))
    torch.manual_seed(1)
    loss, parts = recipe._loss(batch)
    torch.manual_seed(1)  # the same dropout masks
    out = model(batch["input"])
    targets = presence_targets(batch["input"], batch["target"])
    expected = F.binary_cross_entropy_with_logits(out.presence_logits, targets)
    torch.testing.assert_close(parts["presence"], expected)
    pixel = F.smooth_l1_loss(out.image, batch["target"], beta=config.loss.smooth_l1_beta)
    torch.testing.assert_close(loss, pixel + 0.5 * expected)  # a dense FFN: no aux loss


def test_trainable_trains_only_its_modules_and_keeps_the_rest_in_eval_mode(tmp_path):
    """train.trainable: a gate learned around a fixed restorer. The fixed parameters end bit-identical,
    the gate's move; the fixed modules run without dropout (their output on a batch does not depend
    on the dropout RNG), and validation gives every module its own mode back."""
    torch.manual_seed(0)
    saved = create_model(**{**MODEL, "ffn": "mofme", "dropout": 0.5})
    saved.save_pretrained(tmp_path / "saved")
    gated = {**MODEL, "ffn": "mofme", "dropout": 0.5, "presence_gate": True, "global_context": True}
    new = ["presence_head", "context", "context_bias", "context_gate"]
    train = {
        "init_from": str(tmp_path / "saved"),
        "init_new": new,
        "trainable": ["presence_head", "context_gate"],
    }
    config = _config(tmp_path, "fixed", model=gated, loss={"presence_weight": 0.5}, train=train)
    recipe = RestorationRecipe(config).setup()
    model = recipe.model
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    recipe._train_mode()
    assert not model.training and not model.blocks.training and model.presence_head.training
    batch = next(iter(recipe._loader(0, 0)))
    runs = []
    for seed in (1, 2):  # different dropout draws: the fixed restorer gives the same output
        torch.manual_seed(seed)
        out = model(batch["input"])
        runs.append((out.image - batch["input"]) / torch.sigmoid(out.presence_logits))
    torch.testing.assert_close(runs[0], runs[1])
    recipe.train()
    after = model.state_dict()
    trained = [name for name in after if not torch.equal(after[name], before[name])]
    assert trained and all(name.split(".")[0] in ("presence_head", "context_gate") for name in trained)
    assert any(name.startswith("context_gate") for name in trained)
    assert not model.training and model.presence_head.training  # validation gave the modes back
    config = _config(tmp_path, "typo2", model=gated, loss={}, train={**train, "trainable": ["gate"]})
    with pytest.raises(ConfigError, match=r"trainable.*'gate'"):
        RestorationRecipe(config).setup()


def test_gate_settings_are_checked(tmp_path):
    config = _config(tmp_path, "plain", model=MODEL, loss={"presence_weight": 0.5})
    recipe = RestorationRecipe(config).setup()
    with pytest.raises(ValueError, match="presence_gate: true"):
        recipe._loss(next(iter(recipe._loader(0, 0))))
    create_model(**MODEL).save_pretrained(tmp_path / "saved")
    train = {"init_from": str(tmp_path / "saved"), "init_new": ["presense_head"]}
    gated = {**MODEL, "presence_gate": True}
    config = _config(tmp_path, "typo", model=gated, loss={}, train=train)
    with pytest.raises(ConfigError, match=r"init_new.*presense_head"):
        RestorationRecipe(config).setup()
    config = _config(tmp_path, "missing", model=gated, loss={}, train={"init_from": str(tmp_path / "saved")})
    with pytest.raises(ValueError, match=r"missing tensors.*presence_head"):
        RestorationRecipe(config).setup()
