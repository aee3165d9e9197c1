"""Whole-restorer benchmark (``mofme bench restorer``): parameters, FLOPs, latency, memory, training step.

For each E the restorers are built once (dense, MoE, MoFME generator, low-rank, static) and timed
side by side, interleaved repeat by repeat. The "reference" rows are the published computation
(every expert for every token), obtained by switching the same models to ``dispatch="dense"``.
Latency: eval-mode forward under ``torch.no_grad()`` after warm-up, median (synchronised on CUDA).
Training step: forward + backward + AdamW step (the trainer's, fused where available) on one batch. Memory: peak allocated during one
forward, parameters included (see :func:`mofme.timing.peak_memory_mb`). ``--amp bf16``
runs forwards and training steps under autocast, as ``train.amp`` does (``auto``: bf16 on a GPU).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mofme.models import Restorer, build_restorer
from mofme.nn import RoutedLayer
from mofme.timing import count_gflops, machine, peak_memory_mb, time_side_by_side
from mofme.train.optim import adamw
from mofme.train.trainer import autocast_context

from .targets import check_targets, load_limits, targets_markdown

__all__ = ["main", "run", "train_step"]

VARIANTS: dict[str, dict] = {
    "dense": {"ffn": "dense"},
    "moe": {"ffn": "moe"},
    "mofme-generator": {"ffn": "mofme", "modulation": "generator"},
    "mofme-lowrank": {"ffn": "mofme", "modulation": "lowrank"},
    "mofme-static": {"ffn": "mofme", "modulation": "static"},
}
REFERENCES = {"moe-reference": "moe", "mofme-generator-reference": "mofme-generator"}


@dataclass
class Row:
    model: str
    experts: int
    top_k: int
    params: int
    gflops: float
    latency_ms: float
    memory_mb: float
    train_step_ms: float | None
    vs_dense_latency: float


def _set_dispatch(model: nn.Module, dispatch: str) -> None:
    for module in model.modules():
        if isinstance(module, RoutedLayer):
            module.dispatch = dispatch


def _forward(model: Restorer, image: torch.Tensor, dispatch: str, amp: str = "off") -> Callable[[], object]:
    def run() -> object:
        _set_dispatch(model, dispatch)
        with torch.no_grad(), autocast_context(amp, image.device)[0]:
            return model(image).image

    return run


def train_step(
    model: Restorer, image: torch.Tensor, optimizer: torch.optim.Optimizer, amp: str = "off"
) -> Callable[[], None]:
    def run() -> None:
        _set_dispatch(model, "sparse")
        with autocast_context(amp, image.device)[0]:
            out = model(image)
        (out.image.float().mean() + out.aux_loss).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def bench_experts(
    experts: int,
    *,
    preset: str,
    top_k: int,
    size: int,
    batch: int,
    warmup: int,
    repeats: int,
    train_repeats: int,
    device,
    amp: str = "off",
) -> list[Row]:
    """All variants (and the references) at one E, timed side by side."""
    torch.manual_seed(0)
    image = torch.rand(batch, 3, size, size, device=device)
    models = {
        name: build_restorer(preset=preset, num_experts=experts, top_k=top_k, **spec).to(device).eval()
        for name, spec in VARIANTS.items()
    }
    forwards = {name: _forward(model, image, "sparse", amp) for name, model in models.items()}
    forwards |= {ref: _forward(models[base], image, "dense", amp) for ref, base in REFERENCES.items()}
    flops = {name: count_gflops(fn) for name, fn in forwards.items()}
    memory = {
        name: peak_memory_mb(fn, device, models[REFERENCES.get(name, name)]) for name, fn in forwards.items()
    }
    latency = time_side_by_side(forwards, warmup=warmup, repeats=repeats, device=device)
    train_ms: dict[str, float] = {}
    if train_repeats:
        for model in models.values():
            model.train()
        steps = {
            name: train_step(model, image, adamw(model.parameters(), lr=1e-6), amp)
            for name, model in models.items()
        }
        train_ms = {
            name: seconds * 1e3
            for name, seconds in time_side_by_side(
                steps, warmup=1, repeats=train_repeats, device=device
            ).items()
        }
    rows = []
    for name in forwards:
        model = models[REFERENCES.get(name, name)]
        rows.append(
            Row(
                model=name,
                experts=0 if name == "dense" else experts,
                top_k=0 if name == "dense" else top_k,
                params=sum(p.numel() for p in model.parameters()),
                gflops=flops[name],
                latency_ms=latency[name] * 1e3,
                memory_mb=memory[name],
                train_step_ms=train_ms.get(name),
                vs_dense_latency=latency[name] / latency["dense"],
            )
        )
    return rows


def ratios(group: list[Row], experts: int) -> dict[str, float]:
    """The whole-model ratios on the rows of one E (timed side by side); the targets are stated in
    them (limits: ``docs/results/targets.toml``, ``[restorer]``)."""
    by = {r.model: r for r in group}
    dense, gen, static = by["dense"], by["mofme-generator"], by["mofme-static"]
    moe, ref = by["moe"], by["moe-reference"]
    out = {
        "params: MoFME generator / MoE": gen.params / moe.params,
        "params: MoFME static / dense": static.params / dense.params,
        "latency: MoFME generator / dense": gen.latency_ms / dense.latency_ms,
        "latency: MoFME generator / published all-experts MoE": gen.latency_ms / ref.latency_ms,
    }
    if gen.train_step_ms and dense.train_step_ms:
        out["training step: MoFME generator / dense"] = gen.train_step_ms / dense.train_step_ms
    return {f"E={experts}: {name}": value for name, value in out.items()}


def markdown(rows: list[Row], checks: list[dict]) -> str:
    lines = [
        "| model | E | k | params | GFLOPs | latency ms | x dense | peak MiB | train step ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        step = f"{r.train_step_ms:.0f}" if r.train_step_ms else "-"
        lines.append(
            f"| {r.model} | {r.experts or '-'} | {r.top_k or '-'} | {r.params:,} | {r.gflops:.1f} | {r.latency_ms:.1f} "
            f"| {r.vs_dense_latency:.2f} | {r.memory_mb:.0f} | {step} |"
        )
    lines += targets_markdown(checks)
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> Path:
    """Latency and parameters against E, one line per model (log scales)."""
    from mofme.apps.plots import pyplot

    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(dict.fromkeys(r.model for r in rows if r.model != "dense"))
    experts = sorted({r.experts for r in rows if r.experts})
    for name in names:
        series = [r for r in rows if r.model == name]
        left.plot([r.experts for r in series], [r.latency_ms for r in series], marker="o", label=name)
        right.plot([r.experts for r in series], [r.params / 1e6 for r in series], marker="o", label=name)
    dense = [r for r in rows if r.model == "dense"]
    left.axhline(sum(r.latency_ms for r in dense) / len(dense), color="k", linestyle="--", label="dense")
    right.axhline(dense[0].params / 1e6, color="k", linestyle="--", label="dense")
    for ax, ylabel in ((left, "forward latency (ms)"), (right, "parameters (M)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(experts, [str(e) for e in experts])
        ax.set_xlabel("experts E")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    limits = load_limits(args.targets, "restorer") if args.targets else {}
    rows: list[Row] = []
    measured: dict[str, float] = {}
    for experts in args.experts:
        group = bench_experts(
            experts,
            preset=args.preset,
            top_k=args.top_k,
            size=args.size,
            batch=args.batch,
            warmup=args.warmup,
            repeats=args.repeats,
            train_repeats=args.train_repeats,
            device=device,
            amp=args.amp,
        )
        print(f"E={experts}: " + ", ".join(f"{r.model} {r.latency_ms:.0f} ms" for r in group), flush=True)
        rows += group
        measured |= ratios(group, experts)
    checks = check_targets(measured, limits)
    print()
    print(markdown(rows, checks))
    result = {
        "machine": machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"},
        "rows": [asdict(r) for r in rows],
        "ratios": measured,
        "targets": checks,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    if args.plot:
        plot(rows, args.plot)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``mofme bench restorer`` (and ``python -m mofme.benchmarks.restorer``)."""
    parser.add_argument("--preset", default="paper", help="restorer preset benchmarked (default: paper)")
    parser.add_argument(
        "--experts",
        type=int,
        nargs="+",
        default=[4, 16, 64, 128],
        help="numbers of experts E, one row group each",
    )
    parser.add_argument("--top-k", type=int, default=4, help="experts per token k of the routed models")
    parser.add_argument("--size", type=int, default=240, help="image side (pixels)")
    parser.add_argument("--batch", type=int, default=1, help="images per forward pass")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    parser.add_argument("--train-repeats", type=int, default=3, help="0 skips the training-step timing")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the models run (default: cuda when available, else cpu)",
    )
    parser.add_argument(
        "--amp", choices=["off", "auto", "bf16", "fp16"], default="off", help="autocast, as train.amp"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--plot", type=Path, default=None, help="also plot latency and parameters vs E to this image file"
    )
    parser.add_argument(
        "--targets", type=Path, default=None, help="check the ratios against this file's [restorer] limits"
    )


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m mofme.benchmarks.restorer", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
