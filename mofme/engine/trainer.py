"""The training loop: AdamW, warm-up + cosine, clipping after backward, AMP, EMA, DDP, resume.

    result = train(load_config("configs/demo_cpu.yaml"), resume=True)

Outputs under ``train.output_dir``: ``config.yaml`` (the resolved recipe), ``log.jsonl`` (one
JSON object per logged step and per validation), ``tb/`` (TensorBoard), ``checkpoints/`` (see
:mod:`mofme.engine.checkpoint`) and ``best/`` (the model with the best validation PSNR, mean
over weather types; EMA weights when EMA is on). Validation never touches a test set.

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
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm.auto import tqdm

from mofme.losses import RestorationLoss
from mofme.models import build_restorer, load_restorer
from mofme.nn import aux_loss

from .checkpoint import latest_checkpoint, load_training_state, save_checkpoint
from .config import Config
from .data import build_datasets
from .distributed import setup_distributed
from .evaluate import evaluate
from .optim import adamw

__all__ = ["TrainResult", "train", "validate"]


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    best_psnr: float | None
    best_dir: Path | None
    minutes: float


class _SkipSampler(Sampler[int]):
    """The indices of ``sampler`` after the first ``skip`` (to resume mid-epoch)."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)  # type: ignore[arg-type]


def _autocast(amp: str, device: torch.device):
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


def validate(model: nn.Module, dataset: Dataset, config: Config) -> dict[str, float]:
    """Restored PSNR per weather type on the validation images (the evaluation protocol of
    :func:`mofme.engine.evaluate.evaluate` with the recipe's conventions), and ``mean``: the mean
    over weather types, the model-selection criterion."""
    conv = config.eval
    was_training = model.training
    report = evaluate(
        model,
        dataset,
        **conv.model_dump(),
        progress=False,
    )
    model.train(was_training)
    scores = {weather: group.psnr for weather, group in report.per_weather.items()}
    scores["mean"] = report.mean_over_weather.psnr
    return scores


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


def train(config: Config, *, resume: bool = False) -> TrainResult:
    """Train a restorer as ``config`` says; with ``resume``, continue from the latest checkpoint."""
    started = time.monotonic()
    cfg = config.train
    context, device = setup_distributed(cfg.device)
    output_dir = Path(cfg.output_dir)
    checkpoints = output_dir / "checkpoints"
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(config.to_yaml())
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    model: nn.Module = build_restorer(**config.model.build_kwargs()).to(device)
    train_set, val_set = build_datasets(config.data, seed=cfg.seed)
    criterion = RestorationLoss(
        beta=config.loss.smooth_l1_beta,
        perceptual_weight=config.loss.perceptual_weight,
        vgg_weights=config.loss.vgg_weights,
    ).to(device)
    sampler = DistributedSampler(
        train_set,
        num_replicas=context.world_size,
        rank=context.rank,
        shuffle=True,
        seed=cfg.seed,
        drop_last=True,
    )
    batch_size = config.data.batch_size
    steps_per_epoch = len(sampler) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"data: {len(train_set)} training samples are fewer than one batch per process")
    total_steps = cfg.epochs * steps_per_epoch
    optim = config.optim
    optimizer = adamw(model.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    schedule = {"total": total_steps, "warmup": round(optim.warmup_epochs * steps_per_epoch)}
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(
            s, warmup=schedule["warmup"], total=schedule["total"], min_ratio=optim.min_lr / optim.lr
        ),
    )
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay)) if cfg.ema_decay else None
    autocast, scaler = _autocast(cfg.amp, device)

    step, best_psnr = 0, None
    if resume:
        checkpoint = latest_checkpoint(checkpoints)
        if checkpoint is not None:
            state = load_training_state(checkpoint, device)
            model.load_state_dict(load_restorer(checkpoint).state_dict())
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            schedule.update(state["schedule"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            if scaler is not None and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
            step, best_psnr = state["step"], state["best_psnr"]
            _set_rng_state(
                state["rng"][context.rank] if context.rank < len(state["rng"]) else state["rng"][0]
            )
    elif latest_checkpoint(checkpoints) is not None:  # every rank stops, none waits at a barrier
        raise FileExistsError(
            f"{checkpoints} already holds a run: pass --resume, or choose another output_dir"
        )

    net = DistributedDataParallel(model) if context.enabled else model
    logger = _Logger(output_dir, context.is_main)
    best_dir = output_dir / "best"
    progress = tqdm(
        total=schedule["total"],
        initial=step,
        desc="train",
        disable=not (cfg.progress and context.is_main),
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
    )

    def checkpoint_now() -> None:
        rng = [_rng_state()]
        if context.enabled:
            gathered: list[Any] = [None] * context.world_size
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if context.is_main:
            state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "schedule": dict(schedule),
                "step": step,
                "best_psnr": best_psnr,
                "rng": rng,
            }
            if ema is not None:
                state["ema"] = ema.state_dict()
            if scaler is not None:
                state["scaler"] = scaler.state_dict()
            save_checkpoint(checkpoints, step=step, model=model, state=state, keep=cfg.keep_checkpoints)
        context.barrier()

    def run_validation() -> None:
        nonlocal best_psnr
        if context.is_main:
            evaluated = ema.module if ema is not None else model
            scores = validate(evaluated, val_set, config)
            logger.log(step, "val", {f"psnr_{k}": v for k, v in scores.items()})
            if best_psnr is None or scores["mean"] > best_psnr:
                best_psnr = scores["mean"]
                evaluated.save_pretrained(best_dir)
                (best_dir / "metrics.json").write_text(
                    json.dumps({"step": step, "val_psnr": scores}, indent=2)
                )
            progress.set_postfix(val_psnr=f"{scores['mean']:.2f}", refresh=False)
        context.barrier()

    def out_of_time() -> bool:
        return cfg.max_minutes is not None and time.monotonic() - started > 60 * cfg.max_minutes

    timing_start = None
    model.train()
    while step < schedule["total"] and not out_of_time():
        epoch, position = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        loader = DataLoader(
            train_set,
            batch_size=batch_size,
            sampler=_SkipSampler(sampler, position * batch_size),
            num_workers=config.data.num_workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),  # leaves the global RNG alone
            persistent_workers=False,
        )
        for batch in loader:
            inputs, targets = batch["input"].to(device), batch["target"].to(device)
            with autocast:
                restored = net(inputs)
                losses = criterion(restored.image.float(), targets)
                loss = losses.total + aux_loss(model)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            grad_norm = None
            if optim.grad_clip:
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            progress.update(1)
            if step % cfg.log_every == 0 or step == 1:
                values = {"loss": loss.item(), "pixel": losses.pixel.item(), "lr": scheduler.get_last_lr()[0]}
                values["aux"] = restored.aux_loss.item()
                if grad_norm is not None:
                    values["grad_norm"] = float(grad_norm)
                logger.log(step, "train", values)
                progress.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
            if cfg.max_minutes is not None and not resume:
                # fit the cosine schedule into the time budget once the step time is known
                if step == 5:
                    timing_start = time.monotonic()
                elif step == 25 and timing_start is not None:
                    per_step = (time.monotonic() - timing_start) / 20
                    budget = 60 * cfg.max_minutes * 0.95 - (time.monotonic() - started)
                    fitted = step + int(budget / per_step)
                    if fitted < schedule["total"]:
                        schedule["total"] = max(fitted, step + 1)
                        progress.total = schedule["total"]
            if step % cfg.checkpoint_every == 0:
                checkpoint_now()
            if step >= schedule["total"] or out_of_time():
                break
        if (
            step % steps_per_epoch == 0 and (step // steps_per_epoch) % cfg.eval_every == 0
        ) or step >= schedule["total"]:
            run_validation()
    if out_of_time() and step < schedule["total"]:
        run_validation()
    if step % cfg.checkpoint_every != 0:
        checkpoint_now()
    progress.close()
    logger.close()
    context.close()
    return TrainResult(
        output_dir=output_dir,
        steps=step,
        best_psnr=best_psnr,
        best_dir=best_dir if best_dir.exists() else None,
        minutes=(time.monotonic() - started) / 60,
    )
