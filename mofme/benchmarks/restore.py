"""Photo-size restoration benchmark (``mofme bench restore``): seconds per megapixel and peak memory of
what ``mofme restore`` runs, at phone-camera sizes, beside the compute the network needs and the
fastest matrix multiply this CPU runs (its roof).

    mofme bench restore --size 4000x3000 6000x4000 --json docs/results/restore.json

For each size the image is a built-in test photo resized (bicubic) to WIDTHxHEIGHT and restored by
:func:`~mofme.infer.restore.restore_image` with the shipped model (or ``--checkpoint``) through each
path of ``--paths`` (``PATHS``: the plain modules, the CPU fast path that ``mofme restore`` uses, the
fast path with 4 tiles per call), interleaved repeat by repeat; every path is warmed up once first
(on the first size cut to at most 512 x 512). Seconds: median of ``--repeats`` calls. Memory
(:func:`~mofme.timing.peak_rss_mb`): the process's peak resident memory during a path's first call,
and its rise over the call's start; the peak of every path after the first also holds the outputs
kept for the comparison, so the rise is what compares across paths (a ``mofme restore`` process
peaks near the first path's peak). ``max_abs_diff``: largest difference from the first path's
output (outputs in [0, 1]).

The roof: GFLOPs of one tile (``torch.utils.flop_counter``; attention counted through PyTorch's math
kernel, whose matmuls the counter sees) times the number of tiles the tiling plan cuts, divided by
the GFLOP/s of a 2048 x 2048 float32 matmul on the same threads: the time the network would take if
every operation ran as fast as the best-shaped GEMM (``floor_s_per_mp``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mofme.benchmarks import write_json
from mofme.infer.restore import model_tiling, restore_image
from mofme.infer.tiling import tile_windows
from mofme.models import load_restorer
from mofme.timing import machine, peak_rss_mb, time_side_by_side

from .fastpath import add_restore_arguments, parse_size, photo_of_size

__all__ = ["PATHS", "main", "matmul_gflops_per_s", "restore_gflops", "run"]

# name -> restore_image options; the first path asked for is the reference of max_abs_diff
PATHS: dict[str, dict] = {
    "plain": {"fast": False, "batch_size": 1},
    "fast": {"fast": True, "batch_size": 1},  # what `mofme restore` runs
    "fast-batch4": {"fast": True, "batch_size": 4},
}
TARGET_S_PER_MP, TARGET_RSS_MB = 3.0, 2048.0  # issue 31


def matmul_gflops_per_s(size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a ``size x size`` float32 matmul on torch's threads (median of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    seconds = time_side_by_side({"mm": lambda: a @ b}, warmup=2, repeats=repeats, device=torch.device("cpu"))
    return 2 * size**3 / seconds["mm"] / 1e9


def restore_gflops(model: torch.nn.Module, height: int, width: int, *, tile: int, overlap: int) -> dict:
    """The compute of restoring an H x W image: ``{"tiles", "tile_gflops", "gflops", "by_part"}`` for
    the tiling :func:`~mofme.infer.restore.model_tiling` plans (one tile's FLOPs times the number of
    tiles; ``by_part``: one tile's GFLOPs per top-level sub-module; the drop fill's pooling and the
    blending are not counted)."""
    plan = model_tiling(model, height, width, tile=tile, overlap=overlap)
    padded = [-(-n // plan.multiple_of) * plan.multiple_of for n in (height, width)]
    tiles = tile_windows(*padded, tile=plan.tile, overlap=plan.overlap)
    rows, cols = tiles[0]
    x = torch.rand(1, 3, rows.stop - rows.start, cols.stop - cols.start)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x)  # attention under the math kernel: matmuls the counter sees
    per_tile = counter.get_total_flops() / 1e9
    return {
        "tiles": len(tiles),
        "tile_gflops": per_tile,
        "gflops": per_tile * len(tiles),
        "by_part": _by_part(counter.get_flop_counts(), type(model).__name__),
    }


def _by_part(counts: dict[str, dict], root: str) -> dict[str, float]:
    """GFLOPs per top-level sub-module of ``root`` from a flop counter's per-module counts (outermost
    counted modules only, so nothing is counted twice; ``blocks.0`` and ``blocks.1`` add to ``blocks``)."""
    names = [name for name in counts if name.startswith(root + ".")]
    outermost = [n for n in names if not any(n.startswith(other + ".") for other in names if other != n)]
    parts: dict[str, float] = {}
    for name in outermost:
        part = name.split(".")[1]
        parts[part] = parts.get(part, 0.0) + sum(counts[name].values()) / 1e9
    return parts


def _measure(calls: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, dict]:
    """Run every call ``repeats`` times, interleaved: median seconds, peak RSS of the first call, and
    each output's largest difference from the first call's output."""
    rows: dict[str, dict] = {name: {"seconds": []} for name in calls}
    outputs: dict[str, torch.Tensor] = {}
    for repeat in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            if repeat == 0:
                memory = peak_rss_mb(lambda name=name, call=call: outputs.__setitem__(name, call()))
                rows[name]["peak_rss_mb"], rows[name]["rise_mb"] = memory or (None, None)
            else:
                call()
            rows[name]["seconds"].append(time.perf_counter() - start)
    reference = outputs[next(iter(calls))]
    for name, row in rows.items():
        row["median_s"] = statistics.median(row.pop("seconds"))
        row["max_abs_diff"] = float((outputs[name] - reference).abs().max())
    return rows


def run(args: argparse.Namespace) -> dict:
    """Measure every size and path; print the table, write ``--json``; return the result."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_restorer(args.checkpoint).eval()
    options = {"tile": args.tile, "overlap": args.overlap}
    warm = photo_of_size(*(min(512, n) for n in args.size[0]))
    for name in args.paths:
        restore_image(model, warm, **options, **PATHS[name])
    roof = matmul_gflops_per_s()
    sizes = []
    for height, width in args.size:
        image = photo_of_size(height, width)
        calls = {
            name: (lambda o=PATHS[name], image=image: restore_image(model, image, **options, **o))
            for name in args.paths
        }
        rows = _measure(calls, args.repeats)
        megapixels = height * width / 1e6
        for row in rows.values():
            row["s_per_mp"] = row["median_s"] / megapixels
        compute = restore_gflops(model, height, width, **options)
        floor = compute["gflops"] / roof / megapixels
        sizes.append(
            {
                "size": f"{width}x{height}",
                "megapixels": megapixels,
                **compute,
                "floor_s_per_mp": floor,
                "paths": rows,
            }
        )
    result = {
        "machine": machine(),
        "settings": {"model": args.checkpoint, **options, "repeats": args.repeats, "paths": args.paths},
        "matmul_gflops_per_s": roof,
        "sizes": sizes,
        "median_s_per_mp": {
            name: statistics.median(size["paths"][name]["s_per_mp"] for size in sizes) for name in args.paths
        },
        "targets": {"s_per_mp": TARGET_S_PER_MP, "peak_rss_mb": TARGET_RSS_MB},
    }
    print(markdown(result))
    write_json(args.json, result)
    return result


def markdown(result: dict) -> str:
    """The result as Markdown: one row per size and path, then the medians over sizes."""
    s = result["settings"]
    lines = [
        f"restore_image, {s['model']}, tile {s['tile']} overlap {s['overlap']}, "
        f"{result['machine']['cpu_threads']} thread(s), median of {s['repeats']}; "
        f"float32 matmul roof {result['matmul_gflops_per_s']:.0f} GFLOP/s",
        "",
        "| size | path | s | s/MP | peak RSS MiB | rise MiB | max diff | tiles | TFLOP | GFLOP/s | floor s/MP |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in result["sizes"]:
        for name, row in size["paths"].items():
            rss = " | ".join("-" if row[k] is None else f"{row[k]:.0f}" for k in ("peak_rss_mb", "rise_mb"))
            lines.append(
                f"| {size['size']} | {name} | {row['median_s']:.1f} | {row['s_per_mp']:.2f} | {rss} | "
                f"{row['max_abs_diff']:.1e} | {size['tiles']} | {size['gflops'] / 1e3:.1f} | "
                f"{size['gflops'] / row['median_s']:.0f} | {size['floor_s_per_mp']:.2f} |"
            )
    for size in result["sizes"][:1]:
        parts = sorted(size["by_part"].items(), key=lambda item: -item[1])
        shares = ", ".join(f"{name} {100 * g / size['tile_gflops']:.0f}%" for name, g in parts if g > 0)
        lines.append(f"\nOne tile: {size['tile_gflops']:.1f} GFLOP ({shares})")
    lines.append("")
    medians = ", ".join(f"{name} {value:.2f}" for name, value in result["median_s_per_mp"].items())
    target = result["targets"]
    lines.append(
        f"median s/MP over sizes: {medians} (target <= {target['s_per_mp']}; peak RSS <= "
        f"{target['peak_rss_mb']:.0f} MiB)"
    )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--size", type=parse_size, nargs="+", default=[parse_size("4000x3000")], help="WIDTHxHEIGHT ..."
    )
    parser.add_argument("--paths", nargs="+", choices=list(PATHS), default=["plain", "fast", "fast-batch4"])
    parser.add_argument("--repeats", type=int, default=1, help="calls per path and size (median)")
    add_restore_arguments(parser)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m mofme.benchmarks.restore", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
