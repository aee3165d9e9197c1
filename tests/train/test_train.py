"""Training end to end on tiny settings: config handling, atomic checkpoints, resume after
kill -9 (bit-identical final weights on CPU), DDP with two CPU processes."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mofme.losses import drop_mask_loss, drop_targets
from mofme.models import build_restorer, create_model
from mofme.train import trainer
from mofme.train.checkpoint import latest_checkpoint, save_checkpoint
from mofme.train.config import ConfigError, load_config, parse_overrides
from mofme.train.optim import decay_groups
from mofme.train.recipes.restoration import RestorationRecipe, validate
from mofme.train.trainer import train, warmup_cosine

TINY = {
    "model": {"name": "restorer_tiny", "ffn": "mofme", "num_experts": 4, "top_k": 2, "router": "uar"},
    "data": {"type": "builtin", "crop_size": 32, "batch_size": 4, "samples_per_epoch": 16},
    "optim": {"lr": 1e-3, "warmup_epochs": 1},
    "train": {
        "epochs": 4,
        "checkpoint_every": 2,
        "eval_every": 100,
        "log_every": 1,
        "ema_decay": 0.9,
        "progress": False,
    },
}


def _write_config(tmp_path: Path, output: Path, **train) -> Path:
    config = {**TINY, "train": {**TINY["train"], "output_dir": str(output), **train}}
    path = tmp_path / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _final_weights(output: Path) -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(output / "checkpoints") / "model.safetensors"))


def test_overrides_are_parsed_as_yaml_and_bad_fields_are_named(tmp_path):
    assert parse_overrides(["train.epochs=3", "model.router_kwargs={samples: 3}"]) == {
        "train": {"epochs": 3},
        "model": {"router_kwargs": {"samples": 3}},
    }
    assert load_config(None, ["optim.lr=2e-4", "optim.betas=[0.8, 0.9]"]).optim.lr == 2e-4
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: optim\.lr"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"model: .*no field nonsense"):
        load_config(None, ["model.nonsense=1"])
    with pytest.raises(ConfigError, match=r"model: .*ffn='sparse'"):
        load_config(None, ["model.ffn=sparse"])
    legacy = load_config(None, ["model.overrides={residual: true}", "model.top_k=1"]).model
    assert legacy.fields == {"residual": True, "top_k": 1}
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_warmup_cosine_schedule_shape():
    values = [warmup_cosine(s, warmup=10, total=110, min_ratio=0.01) for s in range(120)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))
    assert values[110] == pytest.approx(0.01) and values[119] == pytest.approx(0.01)


def test_perceptual_loss_without_weights_stops_at_start_up(tmp_path):
    config = load_config(
        _write_config(tmp_path, tmp_path / "run"),
        ["loss.perceptual_weight=0.04", "loss.vgg_weights=/nowhere/vgg16.pth"],
    )
    with pytest.raises((FileNotFoundError, ValueError), match="vgg16"):
        train(config)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") is None


def test_checkpoint_is_atomic_and_keeps_the_newest(tmp_path, monkeypatch):
    model = build_restorer(preset="tiny", ffn="dense")
    directory = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        save_checkpoint(directory, step=step, model=model, state={"step": step}, keep=2)
    assert sorted(p.name for p in directory.glob("step-*")) == ["step-00000004", "step-00000006"]
    assert latest_checkpoint(directory).name == "step-00000006"

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError):
        save_checkpoint(directory, step=8, model=model, state={"step": 8})
    assert latest_checkpoint(directory).name == "step-00000006"  # the previous one is intact


def test_train_writes_logs_checkpoints_and_a_best_model(tmp_path):
    output = tmp_path / "run"
    result = train(load_config(_write_config(tmp_path, output)))
    assert result.steps == 16
    assert (output / "config.yaml").is_file() and (output / "tb").is_dir()
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 17))
    assert any(r["kind"] == "val" for r in records)
    assert sorted(p.name for p in result.best_dir.iterdir()) == [
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    with pytest.raises(FileExistsError, match="resume"):
        train(load_config(_write_config(tmp_path, output)))


def test_a_refused_rerun_writes_nothing(tmp_path):
    output = tmp_path / "run"
    train(load_config(_write_config(tmp_path, output, epochs=1)))
    before = {p: p.read_bytes() for p in output.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="resume"):
        train(load_config(_write_config(tmp_path, output, epochs=2)))
    assert {p: p.read_bytes() for p in output.rglob("*") if p.is_file()} == before


def test_a_step_skipped_by_the_fp16_scaler_moves_neither_schedule_nor_ema(tmp_path):
    recipe = RestorationRecipe(load_config(_write_config(tmp_path, tmp_path / "run", amp="fp16", epochs=1)))
    recipe.setup()
    real_loss, calls = recipe._loss, itertools.count()

    def overflow_once(batch):
        loss, parts = real_loss(batch)
        return (loss * float("inf") if next(calls) == 1 else loss), parts

    recipe._loss = overflow_once
    recipe.train()
    assert recipe.step == 4
    assert recipe.scheduler.last_epoch == 3  # 4 steps, one skipped
    assert int(recipe.ema.n_averaged) == 3


def test_a_budget_ending_on_an_epoch_boundary_validates_once(tmp_path):
    recipe = RestorationRecipe(load_config(_write_config(tmp_path, tmp_path / "run", eval_every=1)))
    recipe.setup()
    recipe.out_of_time = lambda: recipe.step >= recipe.steps_per_epoch  # spent at the first epoch end
    recipe.train()
    assert recipe.step == recipe.steps_per_epoch
    assert [step for step, _ in _val_history(tmp_path / "run")] == [recipe.step]


def _val_history(output: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["psnr_mean"]) for r in records if r["kind"] == "val"]


def test_resume_after_an_epoch_end_checkpoint_keeps_the_validation_history(tmp_path, monkeypatch):
    # 2 steps per epoch, validation and a checkpoint at every epoch end
    settings = dict(epochs=2, checkpoint_every=2, eval_every=1, keep_checkpoints=4)
    reference = tmp_path / "reference"

    def config(output):
        return load_config(_write_config(tmp_path, output, **settings), ["data.samples_per_epoch=8"])

    train(config(reference))
    interrupted = tmp_path / "interrupted"
    real_save = trainer.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the first epoch-end checkpoint

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config(interrupted))
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    state = torch.load(
        latest_checkpoint(interrupted / "checkpoints") / "training_state.pt", weights_only=True
    )
    assert state["step"] == 2 and state["best_score"] is not None
    train(config(interrupted), resume=True)
    assert [step for step, _ in _val_history(reference)] == [2, 4]
    assert _val_history(interrupted) == _val_history(reference)
    for name in ("metrics.json", "model.safetensors"):
        assert (interrupted / "best" / name).read_bytes() == (reference / "best" / name).read_bytes()


def _final_state(output: Path) -> dict:
    return torch.load(latest_checkpoint(output / "checkpoints") / "training_state.pt", weights_only=True)


@pytest.mark.parametrize("kill_at", [4, 32])  # before and after the schedule is fitted to the budget
def test_resume_under_a_time_budget_reproduces_the_uninterrupted_run(tmp_path, monkeypatch, kill_at):
    clock = types.SimpleNamespace(now=0.0)  # one second per training step, no time otherwise
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(monotonic=lambda: clock.now, time=time.time))
    real_step, real_save = RestorationRecipe._train_step, trainer.save_checkpoint

    def tick_and_step(self, batch):
        clock.now += 1.0
        return real_step(self, batch)

    def save_then_die(*args, step, **kwargs):
        real_save(*args, step=step, **kwargs)
        if step == kill_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(RestorationRecipe, "_train_step", tick_and_step)
    settings = dict(epochs=1000, max_minutes=1.0, checkpoint_every=4, eval_every=4)
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    train(load_config(_write_config(tmp_path, reference, **settings)))
    monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
    config = load_config(_write_config(tmp_path, interrupted, **settings))
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    train(config, resume=True)

    expected, got = _final_state(reference), _final_state(interrupted)
    # the cosine schedule was fitted to end at the budget's share: 1 s per step
    assert abs(expected["step"] - 60 * trainer.BUDGET_SHARE) <= 1
    assert got["step"] == expected["step"] and got["schedule"] == expected["schedule"]
    assert [step for step, _ in _val_history(reference)] == [16, 32, 48, expected["step"]]
    assert _val_history(interrupted) == _val_history(reference)
    for name in ("metrics.json", "model.safetensors"):
        assert (interrupted / "best" / name).read_bytes() == (reference / "best" / name).read_bytes()
    for name, tensor in expected["ema"].items():
        assert torch.equal(got["ema"][name], tensor), name
    for name, tensor in _final_weights(reference).items():
        assert torch.equal(_final_weights(interrupted)[name], tensor), name


@pytest.mark.slow
def test_resume_after_kill_gives_the_uninterrupted_weights(tmp_path):
    straight = tmp_path / "straight"
    cmd = [sys.executable, "-m", "mofme", "train"]
    subprocess.run(
        [*cmd, str(_write_config(tmp_path, straight))], check=True, env=_env(), capture_output=True
    )

    killed = tmp_path / "killed"
    config = _write_config(tmp_path, killed)
    process = subprocess.Popen(
        [*cmd, str(config)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pointer = killed / "checkpoints" / "latest.json"
        if pointer.is_file() and json.loads(pointer.read_text())["step"] >= 6:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    steps_at_kill = json.loads((killed / "checkpoints" / "latest.json").read_text())["step"]
    assert steps_at_kill < 16, "the run finished before it could be killed"
    subprocess.run([*cmd, str(config), "--resume"], check=True, env=_env(), capture_output=True)

    expected, got = _final_weights(straight), _final_weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


@pytest.mark.slow
def _torchrun(*args: str) -> subprocess.CompletedProcess:
    """Two CPU processes under torchrun; ``--standalone`` picks a free port."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)


def test_ddp_with_two_cpu_processes(tmp_path):
    output = tmp_path / "ddp"
    config = _write_config(tmp_path, output, epochs=2)
    result = _torchrun("-m", "mofme", "train", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    # 16 samples per epoch, 2 processes x batch 4 -> 2 steps per epoch
    assert json.loads((output / "checkpoints" / "latest.json").read_text())["step"] == 4
    train_steps = [
        json.loads(line)["step"]
        for line in (output / "log.jsonl").read_text().splitlines()
        if '"train"' in line
    ]
    assert train_steps == [1, 2, 3, 4]  # logged once, by the main process


def test_two_processes_reach_the_weights_of_one_process_on_the_same_global_batch(tmp_path):
    # no dropout and no balance loss (a nonlinear function of the batch's routing): the gradient of
    # the global batch is then the mean of the two half-batches' gradients, which DDP averages
    settings = {"model.dropout": 0.0, "model.router": "linear", "model.router_kwargs": {"balance_coef": 0.0}}
    overrides = [f"{key}={json.dumps(value)}" for key, value in settings.items()]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    train(load_config(_write_config(tmp_path, single, epochs=2), [*overrides, "data.batch_size=8"]))
    config = _write_config(tmp_path, ddp, epochs=2)  # batch 4 per process
    result = _torchrun("-m", "mofme", "train", str(config), *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((ddp / "checkpoints" / "latest.json").read_text())["step"] == 4
    expected, got = _final_weights(single), _final_weights(ddp)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5, msg=name)
    # the tolerance tells batches apart: half of the global batch (rank 0's alone) lands elsewhere
    half = tmp_path / "half"
    train(load_config(_write_config(tmp_path, half, epochs=2), [*overrides, "data.samples_per_epoch=8"]))
    other = _final_weights(half)
    assert max((other[n] - expected[n]).abs().max() for n in expected) > 100 * 1e-5
    (step, psnr), (expected_step, expected_psnr) = *_val_history(ddp), *_val_history(single)
    assert step == expected_step == 4 and psnr == pytest.approx(expected_psnr, abs=1e-3)


# rank 1's clock runs 50x fast: left to its own clock it would fit a shorter schedule and stop first
_SKEWED_RANK = r"""
import os, sys, time
import torch.distributed as dist
from mofme.cli import main
if os.environ["RANK"] == "1":
    real, start = time.monotonic, time.monotonic()
    time.monotonic = lambda: start + 50 * (real() - start)
_broadcast = dist.broadcast
def record(tensor, *args, **kwargs):  # every shared decision, as this rank received it
    out = _broadcast(tensor, *args, **kwargs)
    with open(sys.argv[2] + f".rank{os.environ['RANK']}", "a") as log:
        log.write(f"{tensor.tolist()}\n")
    return out
dist.broadcast = record
main(["train", sys.argv[1]])
"""


_DRAWS = r"""
import os, sys, torch
from mofme.train.config import load_config
from mofme.train.recipes.restoration import RestorationRecipe
recipe = RestorationRecipe(load_config(sys.argv[1])).setup()
torch.save({"draw": torch.rand(8), "weights": recipe.net.module.state_dict()}, sys.argv[2] + os.environ["RANK"])
"""


def test_ddp_processes_share_weights_but_not_dropout_draws(tmp_path):
    script = tmp_path / "draws.py"
    script.write_text(_DRAWS)
    result = _torchrun(str(script), str(_write_config(tmp_path, tmp_path / "ddp")), str(tmp_path / "rank"))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}", weights_only=True) for r in (0, 1)]
    assert not torch.equal(ranks[0]["draw"], ranks[1]["draw"])
    for name, tensor in ranks[0]["weights"].items():
        assert torch.equal(tensor, ranks[1]["weights"][name]), name


def test_ddp_time_budget_is_decided_on_rank_0(tmp_path):
    output = tmp_path / "ddp"
    config = _write_config(tmp_path, output, epochs=1000, max_minutes=0.4, checkpoint_every=10000)
    script = tmp_path / "skewed.py"
    script.write_text(_SKEWED_RANK)
    result = _torchrun(str(script), str(config), str(tmp_path / "decisions"))
    assert result.returncode == 0, result.stderr[-3000:]
    decisions = [(tmp_path / f"decisions.rank{r}").read_text() for r in (0, 1)]
    assert decisions[0] == decisions[1] and decisions[0]  # both ranks acted on the same figures
    steps = json.loads((output / "checkpoints" / "latest.json").read_text())["step"]
    assert 25 < steps < 1000 * 2  # the budget, not the epochs, ended the run, after the schedule fit


@pytest.mark.parametrize("decay_all", [False, True])
def test_weight_decay_pulls_matrices_but_not_film_vectors(decay_all):
    model = build_restorer(preset="tiny", ffn="mofme", num_experts=4)
    lr, decay = 0.1, 0.5
    optimizer = torch.optim.AdamW(decay_groups(model, decay, decay_all=decay_all), lr=lr)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # the step is the decay alone: p <- p (1 - lr * decay)
    optimizer.step()
    shrunk = 1 - lr * decay
    for name, p in model.named_parameters():
        film_or_bias = name.endswith("bias") or p.ndim == 1
        expected = before[name] * (shrunk if decay_all or not film_or_bias else 1.0)
        torch.testing.assert_close(p.detach(), expected, msg=name)
    gammas = [p[:, : p.shape[1] // 2] for n, p in model.named_parameters() if n.endswith("modulation.bias")]
    assert gammas and all(torch.all(g == (shrunk if decay_all else 1.0)) for g in gammas)


def test_log_routing_logs_the_validation_nmi_of_the_model_it_validates(tmp_path):
    from mofme.models import load_restorer
    from mofme.studies.analysis import expert_counts, routing_nmi
    from mofme.train.data import build_datasets

    output = tmp_path / "run"
    config = load_config(_write_config(tmp_path, output, epochs=2, eval_every=1, log_routing=True))
    result = train(config)
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    routing = {r["step"]: r for r in records if r["kind"] == "routing"}
    assert sorted(routing) == sorted(r["step"] for r in records if r["kind"] == "val") == [4, 8]
    best_step = json.loads((result.best_dir / "metrics.json").read_text())["step"]
    _, val_set = build_datasets(config.data, seed=0)
    expected = routing_nmi(expert_counts(load_restorer(result.best_dir), val_set))
    assert [routing[best_step]["nmi_layer0"]] == pytest.approx(expected, abs=1e-9)  # tiny preset: 1 layer


def test_log_routing_needs_weather_labelled_restoration_data():
    with pytest.raises(ValueError, match="log_routing"):
        load_config("configs/scenes_vit.yaml", ["train.log_routing=true"])


def _batch_mutual_information(probs, weather):
    from mofme.studies.losses import label_expert_mutual_information

    return label_expert_mutual_information(probs.mean(dim=1), weather, 4)  # each image's mean routing


def _weather_group_loss(probs, weather):
    from mofme.studies.losses import label_group_loss

    return label_group_loss(probs, weather, 4)


@pytest.mark.parametrize(
    ("field", "sign", "expected"),
    [("weather_mi", -1.0, _batch_mutual_information), ("weather_groups", 1.0, _weather_group_loss)],
)
def test_weather_aware_routing_losses_enter_the_loss_with_their_weight(tmp_path, field, sign, expected):
    # weather_mi rewards the batch's I(weather; expert); weather_groups penalises each token's
    # cross-entropy on its weather's group of experts
    import mofme.studies  # noqa: F401  (registers the terms)
    from mofme.nn import routing_probs

    overrides = [f"loss.extra.{field}=0.5", "data.clean_fraction=0.25"]
    recipe = RestorationRecipe(load_config(_write_config(tmp_path, tmp_path / "run"), overrides)).setup()
    batch = next(iter(recipe._loader(0, 0)))
    loss, parts = recipe._loss(batch)
    (probs,) = routing_probs(recipe.model)  # the tiny preset: one routed layer, (B, tokens, E)
    assert probs.shape[:2] == (4, 64)
    value = expected(probs, batch["weather"]).detach()
    assert float(parts[field]) == pytest.approx(float(value)) and float(value) > 0
    total = parts["pixel"] + parts["aux"] + sign * 0.5 * parts[field]
    assert float(loss.detach()) == pytest.approx(float(total.detach()), rel=1e-5)
    dense = load_config(_write_config(tmp_path, tmp_path / "dense"), [*overrides, "model.ffn=dense"])
    recipe = RestorationRecipe(dense).setup()
    with pytest.raises(ValueError, match="routed layers"):
        recipe._loss(next(iter(recipe._loader(0, 0))))


def test_particle_weight_weights_the_batch_particles(tmp_path):
    recipe = RestorationRecipe(
        load_config(_write_config(tmp_path, tmp_path / "run"), ["loss.particle_weight=2.0"])
    ).setup()
    batch = next(iter(recipe._loader(0, 0)))
    assert batch["particles"].shape == (4, 1, 32, 32) and float(batch["particles"].max()) > 0
    rng = torch.get_rng_state()  # the UaR router draws dropout masks: replay the same draws
    _, parts = recipe._loss(batch)
    torch.set_rng_state(rng)
    with torch.no_grad():
        restored = recipe.net(batch["input"]).image.float()
    plain = torch.nn.functional.smooth_l1_loss(restored, batch["target"])
    weight = (1 + 2.0 * batch["particles"]).expand_as(restored)
    errors = torch.nn.functional.smooth_l1_loss(restored, batch["target"], reduction="none")
    assert float(parts["pixel"].detach()) == pytest.approx(
        float((weight * errors).sum() / weight.sum()), rel=1e-5
    )
    assert float(parts["pixel"].detach()) != pytest.approx(float(plain), rel=1e-3)


def test_init_from_starts_from_saved_weights_and_names_a_mismatch(tmp_path):
    saved = create_model(**TINY["model"])
    with torch.no_grad():  # weights no fresh initialisation has
        for parameter in saved.parameters():
            parameter.add_(torch.randn_like(parameter))
    saved.save_pretrained(tmp_path / "saved")
    config = load_config(_write_config(tmp_path, tmp_path / "run"), [f"train.init_from={tmp_path / 'saved'}"])
    recipe = RestorationRecipe(config).setup()
    for name, tensor in saved.state_dict().items():
        torch.testing.assert_close(recipe.model.state_dict()[name], tensor, msg=name)
    other = load_config(
        _write_config(tmp_path, tmp_path / "other"),
        [f"train.init_from={tmp_path / 'saved'}", "model.num_experts=8"],
    )
    with pytest.raises(ValueError, match=r"model\.safetensors"):
        RestorationRecipe(other).setup()


def test_drop_mask_weight_trains_the_drop_detector_with_the_restorer(tmp_path):
    overrides = ["model.drop_fill=true", "loss.drop_mask_weight=0.5"]
    recipe = RestorationRecipe(load_config(_write_config(tmp_path, tmp_path / "run"), overrides)).setup()
    batch = next(iter(recipe._loader(0, 0)))
    rng = torch.get_rng_state()  # the UaR router draws dropout masks: replay the same draws
    loss, parts = recipe._loss(batch)
    torch.set_rng_state(rng)
    with torch.no_grad():
        logits = recipe.net(batch["input"]).drop_logits
    expected = drop_mask_loss(logits, drop_targets(batch["particles"], batch["weather"]))
    assert float(parts["drop_mask"]) == pytest.approx(float(expected), rel=1e-5)
    total = parts["pixel"] + parts["aux"] + 0.5 * parts["drop_mask"]
    assert float(loss.detach()) == pytest.approx(float(total.detach()), rel=1e-5)
    plain = load_config(_write_config(tmp_path, tmp_path / "plain"), ["loss.drop_mask_weight=0.5"])
    recipe = RestorationRecipe(plain).setup()
    with pytest.raises(ValueError, match="drop_fill"):
        recipe._loss(next(iter(recipe._loader(0, 0))))


def test_validation_mean_leaves_the_clean_photos_out():
    """The selection criterion is the mean over weather (or family) groups; weather-free items are
    reported as ``clean`` / ``clean_min`` and never enter it."""
    from mofme.data.photos import clean_items, family_renders

    torch.manual_seed(0)
    model = build_restorer(preset="tiny", num_experts=4)
    image = torch.rand(32, 40, 3).numpy()
    other = torch.linspace(0, 1, 32 * 40 * 3).reshape(32, 40, 3).numpy()
    items = family_renders([("a", image)], ["rain-classic", "haze-classic"], severities=(2,))
    config = load_config(None, ["data.type=folder"])
    without = validate(model, items, config)
    scores = validate(model, items + clean_items([("c", image), ("d", other)]), config)
    assert scores["mean"] == pytest.approx((scores["rain-classic"] + scores["haze-classic"]) / 2)
    assert scores["mean"] == pytest.approx(without["mean"]) and "clean_min" not in without
    alone = [validate(model, clean_items([photo]), config)["clean"] for photo in (("c", image), ("d", other))]
    assert scores["clean_min"] == pytest.approx(min(alone)) and scores["clean"] == pytest.approx(
        sum(alone) / 2
    )


def test_each_task_has_its_registered_recipe_and_the_loop_knows_none():
    import mofme.train.trainer as loop
    from mofme.train.config import TASK_LOSSES

    assert set(TASK_LOSSES) == {
        task for task in TASK_LOSSES if loop.recipe_class(task).__module__.startswith("mofme.train.recipes.")
    }
    assert set(loop.RECIPES) == set(TASK_LOSSES)
    with pytest.raises(ValueError, match="no recipe for task 'colourisation'"):
        loop.recipe_class("colourisation")
    source = Path(loop.__file__).read_text()
    assert "weather" not in source.lower() and "mofme.evaluate" not in source and "mofme.losses" not in source


def test_the_old_recipe_name_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match="moved to mofme.train.recipes.restoration.RestorationRecipe"):
        old = trainer.TrainingRecipe
    assert old is RestorationRecipe
