"""The training loop, task-free: AdamW, warm-up + cosine, clipping after backward, AMP, EMA, DDP,
resume. A task is a :class:`Recipe` subclass registered for ``config.task`` (:func:`register_recipe`,
one module per task in :mod:`mofme.train.recipes`) that supplies the loss and the validation score.

    result = train(load_config("configs/demo_cpu.yaml"), resume=True)

Outputs under ``train.output_dir``: ``config.yaml`` (the resolved recipe), ``log.jsonl`` (one
JSON object per logged step and per validation), ``tb/`` (TensorBoard), ``checkpoints/`` (see
:mod:`mofme.train.checkpoint`) and ``best/`` (the model with the best validation score, the
recipe's ``"mean"``; EMA weights when EMA is on). Validation never touches a test set.

Determinism: the data of step s depends only on (seed, epoch, position), dropout draws on the
global torch RNG, and both are restored on resume, so on CPU a run resumed after a kill at any
moment ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm.auto import tqdm

from mofme.atomic import recover_directory, staged_directory
from mofme.models import load_model, load_weights
from mofme.train.checkpoint import latest_checkpoint, load_training_state, save_checkpoint
from mofme.train.config import Config, ConfigError
from mofme.train.data import build_datasets
from mofme.train.distributed import setup_distributed
from mofme.train.optim import adamw, decay_groups

__all__ = ["RECIPES", "Recipe", "TrainResult", "recipe_class", "register_recipe", "train"]


@dataclass
class TrainResult:
    """``best_score``: the best validation score (``metric``: "psnr" in dB, "accuracy", "miou")."""

    output_dir: Path
    steps: int
    best_score: float | None
    best_dir: Path | None
    minutes: float
    metric: str = "psnr"


class _SkipSampler(Sampler[int]):
    """The indices of ``sampler`` after the first ``skip`` (to resume mid-epoch)."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]


def model_part(model: nn.Module, name: str) -> nn.Module:
    """The module of ``model`` that ``train.init_parts``, ``init_new`` or ``trainable`` names ``name``."""
    try:
        return model.get_submodule(name)
    except AttributeError as error:
        raise ConfigError(
            f"train.init_parts / init_new / trainable: the model has no module {name!r}"
        ) from error


def initialised_model(config: Config) -> nn.Module:
    """The recipe's model (on the CPU) with the weights ``train.init_from`` and ``train.init_parts``
    name loaded; ``train.init_new``'s modules keep their initialisation."""
    cfg = config.train
    model = config.model.build()
    parts = {name: model_part(model, name) for name in cfg.init_parts}
    for name in cfg.init_new:
        model_part(model, name)  # a name the model lacks is a config error
    if cfg.init_from is not None:
        load_weights(model, cfg.init_from, new_modules=[*parts, *cfg.init_new])
    for name, part in parts.items():
        load_weights(part, cfg.init_parts[name])
    return model


def autocast_context(amp: str, device: torch.device):
    """(autocast context, GradScaler or None) for ``train.amp``: ``"auto"`` (bf16 on a CUDA GPU that
    has it, else off), ``"off"``, ``"bf16"`` or ``"fp16"`` (with a scaler)."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    if amp == "off":
        return nullcontext(), None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return torch.autocast(device.type, dtype=dtype), scaler


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class _Logger:
    """JSON lines + TensorBoard, main process only."""

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tb"))
            self.jsonl = (output_dir / "log.jsonl").open("a")

    def log(self, step: int, kind: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, "kind": kind, "time": time.time(), **values}) + "\n")
        self.jsonl.flush()
        for key, value in values.items():
            self.writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
            self.jsonl.close()


STEP_TIMING = (5, 25)  # train.max_minutes: the time per step is measured between these steps
BUDGET_SHARE = 0.95  # ... and the cosine schedule is fitted to end at this share of the budget


class Recipe:
    """One training run, split as torchtune's recipes are: :meth:`setup` builds the model, data,
    loss and optimiser (and resumes), :meth:`train` runs the loop; :meth:`save_checkpoint`,
    :meth:`validate` and :meth:`out_of_time` are its parts. A task supplies its model
    (``_setup_model``), data (``_setup_data``), loss (``_setup_loss``, ``_loss``) and
    validation score (``_scores``); the loop, resume, DDP, AMP, EMA and logging stay one.

    Decisions every process must share (the time budget, the fitted schedule) are taken on rank 0
    and broadcast, so no process stops at another step than the others. ``metric`` names the
    validation score (``_scores(model)["mean"]`` is the selection criterion, higher is better).
    """

    metric = "psnr"  # the name of the recipe's validation score

    def __init__(self, config: Config, *, resume: bool = False) -> None:
        self.config, self.cfg, self.resume = config, config.train, resume
        self.started = time.monotonic()
        self.context, self.device = setup_distributed(self.cfg.device)
        self.output_dir = Path(self.cfg.output_dir)
        self.checkpoints = self.output_dir / "checkpoints"
        self.best_dir = self.output_dir / "best"
        self.step, self.best_score, self.validated_step = 0, None, None
        self.first_step, self.seconds_before = 0, 0.0  # where this process started; time of earlier ones
        self._timing_start = 0.0

    # ------------------------------------------------------------------------------------ setup
    def setup(self) -> Recipe:
        if not self.resume and latest_checkpoint(self.checkpoints) is not None:  # refuse, write nothing
            raise FileExistsError(
                f"{self.checkpoints} already holds a run: pass --resume, or choose another output_dir"
            )
        if self.context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            recover_directory(self.best_dir)  # a replacement of best/ killed mid-way
            (self.output_dir / "config.yaml").write_text(self.config.to_yaml())
        torch.manual_seed(self.cfg.seed)
        random.seed(self.cfg.seed)
        self.model = self._setup_model()
        self._setup_data()
        self.criterion = self._setup_loss()
        self._setup_optimizer()
        if self.context.enabled:  # own dropout and MC-dropout draws per process (DDP broadcasts the weights)
            torch.manual_seed(self.cfg.seed + self.context.rank)
        if self.resume:
            self.load_checkpoint()
        self.net = DistributedDataParallel(self.model) if self.context.enabled else self.model
        self.logger = _Logger(self.output_dir, self.context.is_main)
        self.progress = tqdm(
            total=self.schedule["total"],
            initial=self.step,
            desc="train",
            disable=not (self.cfg.progress and self.context.is_main),
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
        )
        return self

    def _setup_model(self) -> nn.Module:
        model = initialised_model(self.config)
        if self.cfg.trainable is not None:
            self.trained_parts = [model_part(model, name) for name in self.cfg.trainable]
            model.requires_grad_(False)
            for part in self.trained_parts:
                part.requires_grad_(True)
        return model.to(self.device)

    def _train_mode(self) -> None:
        """Training mode for what trains: the whole model, or only ``train.trainable``'s modules
        (the fixed rest stays in eval mode, so its dropout does not perturb what the new parts see)."""
        if self.cfg.trainable is None:
            self.model.train()
            return
        self.model.eval()
        for part in self.trained_parts:
            part.train()

    def _setup_data(self) -> None:
        self.train_set, self.val_set = build_datasets(self.config.data, seed=self.cfg.seed)

    # ------------------------------------------------------------------------- the task's part
    def _setup_loss(self) -> nn.Module:
        """The task's criterion (a module, moved to the device)."""
        raise NotImplementedError(f"{type(self).__name__} defines no loss")

    def _loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of a batch and its logged parts (``self.net`` runs the forward pass)."""
        raise NotImplementedError(f"{type(self).__name__} defines no loss")

    def _scores(self, model: nn.Module) -> dict[str, float]:
        """Validation scores of ``model``; ``"mean"`` is the selection criterion (higher is better)."""
        raise NotImplementedError(f"{type(self).__name__} defines no validation score")

    def _routing_scores(self, model: nn.Module) -> dict[str, float]:
        """What ``train.log_routing`` logs at each validation (a task that supports it says what)."""
        return {}

    def _setup_optimizer(self) -> None:
        context, optim, batch_size = self.context, self.config.optim, self.config.data.batch_size
        self.sampler = DistributedSampler(
            self.train_set,
            num_replicas=context.world_size,
            rank=context.rank,
            shuffle=True,
            seed=self.cfg.seed,
            drop_last=True,
        )
        self.steps_per_epoch = len(self.sampler) // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"data: {len(self.train_set)} training samples are fewer than one batch per process"
            )
        groups = decay_groups(self.model, optim.weight_decay, decay_all=optim.decay_all)
        self.optimizer = adamw(groups, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
        total = self.cfg.epochs * self.steps_per_epoch
        self.schedule = {"total": total, "warmup": round(optim.warmup_epochs * self.steps_per_epoch)}
        min_ratio = optim.min_lr / optim.lr
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: warmup_cosine(
                s, warmup=self.schedule["warmup"], total=self.schedule["total"], min_ratio=min_ratio
            ),
        )
        decay = self.cfg.ema_decay
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay else None
        self.autocast, self.scaler = autocast_context(self.cfg.amp, self.device)

    # ------------------------------------------------------------------------------- checkpoints
    def load_checkpoint(self) -> None:
        """Continue from the latest checkpoint, if there is one: weights, optimiser, schedule, EMA,
        scaler, step, best score, validation history and RNG."""
        checkpoint = latest_checkpoint(self.checkpoints)
        if checkpoint is None:
            return
        state = load_training_state(checkpoint, self.device)
        self.model.load_state_dict(load_model(checkpoint).state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.schedule.update(state["schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.best_score = state["step"], state.get("best_score", state.get("best_psnr"))
        self.validated_step = state.get("validated_step")
        self.first_step, self.seconds_before = self.step, state.get("seconds", 0.0)
        self.schedule.setdefault("fitted", self.step >= STEP_TIMING[1])  # older checkpoints lack the flag
        rank, saved = self.context.rank, state["rng"]
        _set_rng_state(saved[rank] if rank < len(saved) else saved[0])

    def save_checkpoint(self) -> None:
        rng = [_rng_state()]
        if self.context.enabled:
            gathered: list[Any] = [None] * self.context.world_size
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if self.context.is_main:
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "schedule": dict(self.schedule),
                "step": self.step,
                "best_score": self.best_score,
                "validated_step": self.validated_step,
                "seconds": self.seconds_spent(),
                "rng": rng,
            }
            if self.ema is not None:
                state["ema"] = self.ema.state_dict()
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            save_checkpoint(
                self.checkpoints,
                step=self.step,
                model=self.model,
                state=state,
                keep=self.cfg.keep_checkpoints,
            )
        self.context.barrier()

    # -------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Score the (EMA) model on the validation split once per step; keep it as ``best/`` when
        it beats every earlier score (the folder is replaced whole, never half-written)."""
        if self.validated_step == self.step:
            return
        self.validated_step = self.step
        if self.context.is_main:
            evaluated = self.ema.module if self.ema is not None else self.model
            scores = self._scores(evaluated)
            self.logger.log(self.step, "val", {f"{self.metric}_{k}": v for k, v in scores.items()})
            routing = self._routing_scores(evaluated) if self.cfg.log_routing else {}
            if routing:
                self.logger.log(self.step, "routing", routing)
            if self.best_score is None or scores["mean"] > self.best_score:
                self.best_score = scores["mean"]
                with staged_directory(self.best_dir) as stage:
                    evaluated.save_pretrained(stage)
                    metrics = {"step": self.step, f"val_{self.metric}": scores}
                    (stage / "metrics.json").write_text(json.dumps(metrics, indent=2))
            self.progress.set_postfix({f"val_{self.metric}": f"{scores['mean']:.4g}"}, refresh=False)
        self.context.barrier()

    # ------------------------------------------------------------------------------------ budget
    def seconds_spent(self) -> float:
        """Training time of the run so far: this process's plus that of the runs it resumed."""
        return self.seconds_before + time.monotonic() - self.started

    def out_of_time(self) -> bool:
        """Whether ``train.max_minutes`` is spent over the whole run (resumes included), as rank 0's
        clock says (shared by every rank)."""
        if self.cfg.max_minutes is None:
            return False
        spent = self.seconds_spent() > 60 * self.cfg.max_minutes
        return bool(self.context.from_main(spent, self.device))

    def _fit_schedule(self) -> None:
        """With ``train.max_minutes``, fit the cosine schedule into what is left of the budget once
        the time per step is known; rank 0 measures, every rank uses its figure. The fit is kept in
        checkpoints. The time is measured over ``STEP_TIMING``, or, in a process that resumed after
        its start, over as many steps from the second step of this process on."""
        if self.cfg.max_minutes is None or self.schedule.get("fitted"):
            return
        first, last = STEP_TIMING
        start = max(first, self.first_step + 1)  # a process's first step also pays for its start-up
        if self.step == start:
            self._timing_start = time.monotonic()
        if self.step != start + last - first:
            return
        per_step = (time.monotonic() - self._timing_start) / (last - first)
        budget = 60 * self.cfg.max_minutes * BUDGET_SHARE - self.seconds_spent()
        fitted = int(self.context.from_main(self.step + int(budget / per_step), self.device))
        self.schedule["fitted"] = True
        if fitted < self.schedule["total"]:
            self.schedule["total"] = max(fitted, self.step + 1)
            self.progress.total = self.schedule["total"]

    # -------------------------------------------------------------------------------------- loop
    def _loader(self, epoch: int, position: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        batch_size = self.config.data.batch_size
        return DataLoader(
            self.train_set,
            batch_size=batch_size,
            sampler=_SkipSampler(self.sampler, position * batch_size),
            num_workers=self.config.data.num_workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(self.cfg.seed + epoch),  # leaves the global RNG alone
            persistent_workers=False,
        )

    def _train_step(self, batch: dict) -> dict[str, float] | None:
        """One optimiser step; the logged values on logging steps, else None."""
        loss, parts = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        scaler = self.scaler
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        grad_clip = self.config.optim.grad_clip
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip) if grad_clip else None
        applied = True
        if scaler is not None:
            scale = scaler.get_scale()
            scaler.step(self.optimizer)
            scaler.update()
            applied = scaler.get_scale() >= scale  # the scale drops when inf/NaN skipped the step
        else:
            self.optimizer.step()
        if applied:  # a skipped step moves neither the schedule nor the average
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        self.step += 1
        self.progress.update(1)
        if self.step % self.cfg.log_every and self.step != 1:
            return None
        values = {"loss": loss.item(), **{k: v.item() for k, v in parts.items()}}
        values["lr"] = self.scheduler.get_last_lr()[0]
        if grad_norm is not None:
            values["grad_norm"] = float(grad_norm)
        return values

    def _validation_due(self) -> bool:
        epoch, position = divmod(self.step, self.steps_per_epoch)
        return (position == 0 and epoch % self.cfg.eval_every == 0) or self.step >= self.schedule["total"]

    def train(self) -> TrainResult:
        """Run the loop to the end of the schedule (or of the time budget) and return the result."""
        self._train_mode()
        while self.step < self.schedule["total"] and not self.out_of_time():
            epoch, position = divmod(self.step, self.steps_per_epoch)
            for batch in self._loader(epoch, position):
                values = self._train_step(batch)
                if values is not None:
                    self.logger.log(self.step, "train", values)
                    self.progress.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
                self._fit_schedule()
                if self._validation_due():  # before the checkpoint, which then holds its result
                    self.validate()
                if self.step % self.cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.step >= self.schedule["total"] or self.out_of_time():
                    break
        unscored = self.validated_step != self.step  # stopped by the budget between validations
        self.validate()  # the final model is always scored (once)
        if unscored or self.step % self.cfg.checkpoint_every != 0:
            self.save_checkpoint()  # the last checkpoint holds the final score
        return self._finish()

    def _finish(self) -> TrainResult:
        self.progress.close()
        self.logger.close()
        self.net = self.model  # release DDP's reducer (and its gloo work) before the group goes
        self.context.close()
        return TrainResult(
            output_dir=self.output_dir,
            steps=self.step,
            best_score=self.best_score,
            best_dir=self.best_dir if self.best_dir.exists() else None,
            minutes=(time.monotonic() - self.started) / 60,
            metric=self.metric,
        )


RECIPES: dict[str, type[Recipe]] = {}  # task -> its recipe (mofme/train/recipes/, one module per task)


def register_recipe(task: str):
    """Class decorator: the recipe of ``task`` (``config.task``)."""

    def register(cls: type[Recipe]) -> type[Recipe]:
        if task in RECIPES:
            raise ValueError(f"task {task!r} already has a recipe: {RECIPES[task].__name__}")
        RECIPES[task] = cls
        return cls

    return register


def recipe_class(task: str) -> type[Recipe]:
    """The recipe registered for ``task`` (importing :mod:`mofme.train.recipes` registers the shipped ones)."""
    import mofme.train.recipes  # noqa: F401  (the recipes register themselves on import)

    if task not in RECIPES:
        raise ValueError(f"no recipe for task {task!r}; registered: {sorted(RECIPES)}")
    return RECIPES[task]


def train(config: Config, *, resume: bool = False) -> TrainResult:
    """Train the model of ``config.task`` as ``config`` says; with ``resume``, continue from the
    latest checkpoint."""
    return recipe_class(config.task)(config, resume=resume).setup().train()


_MOVED = {"TrainingRecipe": "RestorationRecipe", "validate": "validate"}  # -> mofme.train.recipes.restoration


def __getattr__(name: str) -> Any:
    """Deprecated names of this module (one release): the restoration recipe and its validation."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    from mofme.train.recipes import restoration

    warnings.warn(
        f"mofme.train.trainer.{name} moved to mofme.train.recipes.restoration.{_MOVED[name]}; "
        "the old name goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(restoration, _MOVED[name])
