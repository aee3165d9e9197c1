"""Layer benchmark: parameters, FLOPs and median latency of DenseFFN, SparseMoE and MoFME.

    python -m mofme.benchmarks.layers [--experts 4 16 64 128 512] [--top-k 1 2 4] [--json F]
        [--device cuda --dtype bf16 --mode train --tokens 28800 --mixtral]

For each (E, k) the layers are built once and timed side by side, interleaved repeat by repeat, so
that every ratio to DenseFFN comes from one run on the same machine state. Latency: forward in
eval mode under ``torch.no_grad()``, after warm-up, median of the repeats (synchronised on CUDA).
``--mode train`` times forward + backward (train mode, loss = mean output + aux loss) instead.
``--dtype bf16|fp16`` runs layers and tokens in that dtype (routers keep float32 inside).
``--mixtral`` adds the transformers Mixtral sparse block of the same D, E, k (SwiGLU experts of equal
FLOPs, :mod:`mofme.benchmarks.mixtral`) in each experts backend the installed version offers.
FLOPs: ``torch.utils.flop_counter`` on one call (2 per multiply-add). The "reference" rows are
the published computation (every expert for every token); they are timed for E up to
``--reference-max-experts``. The router section times a training step (forward + backward) of
MoFME with the linear router and with UaR.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from mofme.nn import DenseFFN, MoEOutput, MoFME, SparseMoE
from mofme.timing import count_gflops, machine, time_side_by_side

from .mixtral import MixtralLayer, equal_flops_hidden, implementations
from .targets import check_targets, load_limits, targets_markdown


@dataclass
class Row:
    layer: str
    experts: int
    top_k: int
    params: int
    gflops: float
    latency_ms: float
    vs_dense: float


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _forward(
    layer: nn.Module, x: torch.Tensor, dispatch: str | None = None, *, train: bool = False
) -> Callable[[], object]:
    """One call of ``layer`` on ``x``: a no-grad forward, or with ``train`` forward + backward of
    the mean output (+ the layer's aux loss), gradients cleared after."""

    def run() -> object:
        if dispatch is not None:
            layer.dispatch = dispatch
        if not train:
            with torch.no_grad():
                return layer(x)
        out = layer(x)
        loss = out.output.float().mean() + out.aux_loss if isinstance(out, MoEOutput) else out.float().mean()
        loss.backward()
        layer.zero_grad(set_to_none=True)
        return None

    return run


def _layers(experts: int, top_k: int, *, dim: int, mixtral: list[str]) -> dict[str, nn.Module]:
    layers: dict[str, nn.Module] = {
        "dense": DenseFFN(dim),
        "moe": SparseMoE(dim, experts, top_k),
        "mofme-generator": MoFME(dim, experts, top_k, modulation="generator"),
        "mofme-lowrank": MoFME(dim, experts, top_k, modulation="lowrank"),
        "mofme-static": MoFME(dim, experts, top_k, modulation="static"),
    }
    for implementation in mixtral:
        layers[f"mixtral-{implementation}"] = MixtralLayer(
            dim, experts, top_k, hidden=equal_flops_hidden(dim), implementation=implementation
        )
    return layers


def bench_group(
    experts: int,
    top_k: int,
    *,
    dim: int,
    tokens: int,
    warmup: int,
    repeats: int,
    reference: bool,
    device,
    dtype: torch.dtype = torch.float32,
    train: bool = False,
    mixtral: Sequence[str] = (),
) -> list[Row]:
    """Dense, MoE, MoFME generator / low-rank (r = D / 8) / static (the all-experts references,
    the Mixtral blocks) at one (E, k)."""
    torch.manual_seed(0)
    x = torch.randn(tokens, dim, device=device, dtype=dtype)
    layers = _layers(experts, top_k, dim=dim, mixtral=list(mixtral))
    for layer in layers.values():
        layer.to(device=device, dtype=dtype).train(train)
    dispatch = {name: None if name == "dense" or name.startswith("mixtral") else "sparse" for name in layers}
    fns = {name: _forward(layer, x, dispatch[name], train=train) for name, layer in layers.items()}
    if reference:
        fns["moe-reference"] = _forward(layers["moe"], x, "dense", train=train)
        fns["mofme-generator-reference"] = _forward(layers["mofme-generator"], x, "dense", train=train)
    flops = {name: count_gflops(fn) for name, fn in fns.items()}
    latency = time_side_by_side(fns, warmup=warmup, repeats=repeats, device=device)
    rows = []
    for name in fns:
        layer = layers[name.removesuffix("-reference")]
        rows.append(
            Row(
                layer=name,
                experts=0 if name == "dense" else experts,
                top_k=0 if name == "dense" else top_k,
                params=_params(layer),
                gflops=flops[name],
                latency_ms=latency[name] * 1e3,
                vs_dense=latency[name] / latency["dense"],
            )
        )
    return rows


def bench_router_training(
    experts: int, top_k: int, *, dim: int, tokens: int, warmup: int, repeats: int, device
) -> dict:
    """Training-step time (forward + backward) of MoFME with the linear router and with UaR."""
    torch.manual_seed(0)
    x = torch.randn(tokens, dim, device=device)
    layers = {
        router: MoFME(dim, experts, top_k, router=router).to(device).train() for router in ("linear", "uar")
    }

    def step(layer: nn.Module) -> Callable[[], None]:
        def run() -> None:
            out = layer(x)
            (out.output.mean() + out.aux_loss).backward()
            layer.zero_grad(set_to_none=True)

        return run

    latency = time_side_by_side(
        {name: step(layer) for name, layer in layers.items()}, warmup=warmup, repeats=repeats, device=device
    )
    return {
        "experts": experts,
        "top_k": top_k,
        "linear_ms": latency["linear"] * 1e3,
        "uar_ms": latency["uar"] * 1e3,
        "uar_vs_linear": latency["uar"] / latency["linear"],
    }


def ratios(rows: list[Row], router: dict | None) -> dict[str, float]:
    """The ratios the targets are stated in (limits: ``docs/results/targets.toml``, ``[layers]``)."""

    def find(layer: str, experts: int, top_k: int) -> Row | None:
        return next((r for r in rows if r.layer == layer and r.experts == experts and r.top_k == top_k), None)

    out: dict[str, float] = {}
    gen, static, moe = (find(n, 128, 4) for n in ("mofme-generator", "mofme-static", "moe"))
    if gen and static and moe:
        out["E=128 k=4: MoFME generator latency / dense"] = gen.vs_dense
        out["E=128 k=4: MoFME static latency / dense"] = static.vs_dense
        lowrank = find("mofme-lowrank", 128, 4)
        if lowrank:
            out["E=128 k=4: MoFME low-rank latency / dense"] = lowrank.vs_dense
        out["E=128 k=4: MoFME generator latency / SparseMoE"] = gen.latency_ms / moe.latency_ms
        out["E=128 k=4: MoFME generator params / SparseMoE"] = gen.params / moe.params
        for row in rows:
            if row.layer.startswith("mixtral-") and (row.experts, row.top_k) == (128, 4):
                out[f"E=128 k=4: MoFME generator latency / {row.layer}"] = gen.latency_ms / row.latency_ms
    for layer in ("mofme-generator", "mofme-lowrank", "mofme-static"):
        for k in sorted({r.top_k for r in rows}):
            small, large = find(layer, 16, k), find(layer, 512, k)
            if small and large:
                out[f"{layer} k={k}: latency E=512 / E=16"] = large.latency_ms / small.latency_ms
    if router:
        out[f"E={router['experts']} k={router['top_k']}: UaR / linear training step"] = router[
            "uar_vs_linear"
        ]
    return out


def markdown(rows: list[Row], router: dict | None, checks: list[dict]) -> str:
    lines = [
        "| layer | E | k | params | GFLOPs | latency ms | x dense |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.layer} | {r.experts or '-'} | {r.top_k or '-'} | {r.params:,} | {r.gflops:.2f} "
            f"| {r.latency_ms:.1f} | {r.vs_dense:.2f} |"
        )
    if router:
        lines += [
            "",
            f"Training step (fwd+bwd), MoFME generator E={router['experts']} k={router['top_k']}: "
            f"linear {router['linear_ms']:.1f} ms, UaR {router['uar_ms']:.1f} ms "
            f"(x{router['uar_vs_linear']:.3f})",
        ]
    lines += targets_markdown(checks)
    return "\n".join(lines)


def _parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The benchmark's command line (``python -m mofme.benchmarks.layers --help``)."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m mofme.benchmarks.layers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--experts", type=int, nargs="+", default=[4, 16, 64, 128, 512])
    parser.add_argument("--top-k", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--tokens", type=int, default=1800, help="1,800 = two 240x240 images at patch 8")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--reference-max-experts", type=int, default=128)
    parser.add_argument(
        "--router-experts", type=int, default=128, help="E of the UaR training-step comparison"
    )
    parser.add_argument("--router-top-k", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument(
        "--mode", choices=["forward", "train"], default="forward", help="train: forward + backward"
    )
    parser.add_argument(
        "--mixtral",
        action="store_true",
        help="add transformers' Mixtral block in each experts backend it has",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--targets", type=Path, default=None, help="check the ratios against this file's [layers] limits"
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = _parser(prog)
    args = parser.parse_args(argv)
    limits = load_limits(args.targets, "layers") if args.targets else {}
    device = torch.device(args.device)
    mixtral = implementations() if args.mixtral else []
    if args.mixtral and not mixtral:
        parser.error("--mixtral needs the transformers package (pip install transformers)")
    rows: list[Row] = []
    for experts in args.experts:
        for top_k in args.top_k:
            if top_k > experts:
                continue
            group = bench_group(
                experts,
                top_k,
                dim=args.dim,
                tokens=args.tokens,
                warmup=args.warmup,
                repeats=args.repeats,
                reference=experts <= args.reference_max_experts and top_k == max(args.top_k),
                device=device,
                dtype=DTYPES[args.dtype],
                train=args.mode == "train",
                mixtral=mixtral,
            )
            rows += group
            print(
                f"E={experts} k={top_k}: " + ", ".join(f"{r.layer} {r.latency_ms:.1f} ms" for r in group),
                flush=True,
            )
    router = None
    if args.router_experts:
        router = bench_router_training(
            args.router_experts,
            args.router_top_k,
            dim=args.dim,
            tokens=args.tokens,
            warmup=args.warmup,
            repeats=args.repeats,
            device=device,
        )
    measured = ratios(rows, router)
    checks = check_targets(measured, limits)
    print()
    print(markdown(rows, router, checks))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "machine": machine(),
            "settings": {
                k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"
            },
            "rows": [asdict(r) for r in rows],
            "router_training": router,
            "ratios": measured,
            "targets": checks,
        }
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
