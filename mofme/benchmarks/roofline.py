"""Where a MoFME layer's time goes (``mofme bench roofline``): its per-expert generator GEMMs timed
alone against the DenseFFN's GEMMs, and the generator bank's bytes against the memory bandwidth.

    mofme bench roofline --experts 16 128 512 --json docs/results/roofline.json

For each E, a DenseFFN and a MoFME layer (D, 4D hidden, top-k linear router; ``--modulation``
generator or low-rank) on the same random tokens, timed side by side with the layer's expert GEMMs
alone (:meth:`~mofme.nn.mofme.FeatureModulation.generate` on the rows the router grouped, as the
layer computes them), and apart from them one copy of a 256 MiB buffer (the memory bandwidth).
From these:

* ``flop_ratio``: the layer's FLOPs over the DenseFFN's: the ratio if every GEMM ran at the
  DenseFFN's rate (the compute roof);
* ``expert_rate``: the expert GEMMs' GFLOP/s over the DenseFFN's (small GEMMs of about N k / E rows);
* ``predicted_ratio``: the layer's other FLOPs at the DenseFFN's rate plus the expert GEMMs' own
  time, over the DenseFFN's time: what the layer costs if nothing but the expert GEMMs ran slower;
* ``bank_floor_ms``: the bytes of the expert bank over the bandwidth (each weight read once);
* ``measured_ratio``: the layer's time over the DenseFFN's.

Eval mode, ``torch.no_grad()``, float32, median of ``--repeats`` after ``--warmup``, on torch's threads.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from mofme.benchmarks import write_json
from mofme.nn import DenseFFN, MoFME
from mofme.timing import count_gflops, machine, time_side_by_side

__all__ = ["main", "roofline_row"]

COPY_BYTES = 256 * 2**20


def _expert_gemms(layer: MoFME, x: torch.Tensor):
    """A call of ``layer``'s expert GEMMs alone, on the rows its router groups for ``x`` (N, D) (to be
    called under ``torch.no_grad()``)."""
    with torch.no_grad():
        rows, groups = layer.modulation.grouped_rows(layer.gate(x), layer.router(x))
    return lambda: layer.modulation.generate(rows, groups)


def roofline_row(
    experts: int, *, top_k: int, dim: int, tokens: int, modulation: str, warmup: int, repeats: int
) -> dict:
    """One E: FLOPs, side-by-side times and the ratios of the module docstring."""
    torch.manual_seed(0)
    x = torch.randn(tokens, dim)
    dense, layer = DenseFFN(dim).eval(), MoFME(dim, experts, top_k, modulation=modulation).eval()
    source, target = torch.empty(COPY_BYTES // 4), torch.empty(COPY_BYTES // 4)
    fns = {"dense": lambda: dense(x), "layer": lambda: layer(x), "experts": _expert_gemms(layer, x)}
    cpu = torch.device("cpu")
    with torch.no_grad():
        gflops = {name: count_gflops(fn) for name, fn in fns.items()}
        seconds = time_side_by_side(fns, warmup=warmup, repeats=repeats, device=cpu)
    # timed apart: a 256 MiB copy between the calls above would evict their weights from the caches
    seconds |= time_side_by_side(
        {"copy": lambda: target.copy_(source)}, warmup=1, repeats=repeats, device=cpu
    )
    dense_rate = gflops["dense"] / seconds["dense"]
    expert_rate = gflops["experts"] / seconds["experts"]
    bank = sum(p.numel() * p.element_size() for p in layer.modulation.parameters())
    bandwidth = 2 * COPY_BYTES / seconds["copy"]  # read + write
    other = (gflops["layer"] - gflops["experts"]) / dense_rate
    return {
        "experts": experts,
        "gflops": gflops,
        "ms": {name: value * 1e3 for name, value in seconds.items()},
        "dense_gflops_per_s": dense_rate,
        "expert_gflops_per_s": expert_rate,
        "bandwidth_gb_per_s": bandwidth / 1e9,
        "bank_mb": bank / 2**20,
        "bank_floor_ms": bank / bandwidth * 1e3,
        "flop_ratio": gflops["layer"] / gflops["dense"],
        "expert_rate": expert_rate / dense_rate,
        "predicted_ratio": (other + seconds["experts"]) / seconds["dense"],
        "measured_ratio": seconds["layer"] / seconds["dense"],
    }


def markdown(result: dict) -> str:
    """The rows as a Markdown table with the settings."""
    s = result["settings"]
    lines = [
        f"MoFME-{s['modulation']} vs DenseFFN, D={s['dim']}, {s['tokens']} tokens, k={s['top_k']}, "
        f"{result['machine']['cpu_threads']} thread(s), median of {s['repeats']}",
        "",
        "| E | layer / dense: FLOPs | expert GEMMs ms | their GFLOP/s / dense's | predicted | measured "
        "| bank MiB | bank read ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['experts']} | {row['flop_ratio']:.2f} | {row['ms']['experts']:.1f} | "
            f"{row['expert_rate']:.2f} | {row['predicted_ratio']:.2f} | {row['measured_ratio']:.2f} | "
            f"{row['bank_mb']:.0f} | {row['bank_floor_ms']:.1f} |"
        )
    dense = result["rows"][0]
    lines.append(
        f"\nDenseFFN {dense['ms']['dense']:.1f} ms at {dense['dense_gflops_per_s']:.0f} GFLOP/s; "
        f"memory {dense['bandwidth_gb_per_s']:.1f} GB/s (copy)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m mofme.benchmarks.roofline", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--experts", type=int, nargs="+", default=[16, 128, 512])
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--tokens", type=int, default=1800)
    parser.add_argument("--modulation", choices=["generator", "lowrank"], default="generator")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = {k: getattr(args, k) for k in ("top_k", "dim", "tokens", "modulation", "warmup", "repeats")}
    rows = [roofline_row(e, **settings) for e in args.experts]
    result = {"machine": machine(), "settings": settings, "rows": rows}
    print(markdown(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
