"""Segmenter benchmark: peak memory and time of a Cityscapes-size image (1024 x 2048) on CPU / GPU.

    python -m mofme.benchmarks.segmenter [--presets tiny small] [--tiles 64 256 512] [--json F] [--targets F]

For each preset (MoFME FFN, 19 classes) and tile size, the image is segmented by
:func:`~mofme.infer.segment.segment_logits` (eval mode, no gradients; overlap = tile / 4,
``--batch-size`` windows per forward), each configuration in a fresh process. Memory: on CPU the
peak resident memory of that process (everything: Python, torch, model, image, activations); on
CUDA the allocator's peak. Time: median of ``--repeats`` calls. The ratio named
``"<preset> tile=<t>: peak GiB"`` is held to ``[segmenter]`` in the targets file (issue 10: 4 GiB).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

import torch

from mofme.infer.segment import segment_logits
from mofme.models import create_model
from mofme.timing import machine, time_side_by_side

from .targets import check_targets, load_limits, targets_markdown

__all__ = ["bench_segmenter", "main"]


def _measure(
    preset: str, tile: int, size: tuple[int, int], batch_size: int, repeats: int, device: str
) -> dict:
    """One configuration, in the calling process: peak memory (CUDA: the allocator's peak; CPU: the
    process's peak resident set, ``ru_maxrss``) and the median seconds of ``repeats`` calls."""
    import resource

    torch.manual_seed(0)
    run_on = torch.device(device)
    model = create_model(f"segmenter_{preset}", num_classes=19, ffn="mofme").to(run_on).eval()
    image = torch.rand(3, *size, device=run_on)

    def run() -> None:
        with torch.no_grad():
            segment_logits(model, image, tile=tile, overlap=tile // 4, batch_size=batch_size, device=run_on)

    if run_on.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run_on)
    seconds = time_side_by_side({"run": run}, warmup=0, repeats=repeats, device=run_on)["run"]
    if run_on.type == "cuda":
        peak = torch.cuda.max_memory_allocated(run_on) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    params = sum(p.numel() for p in model.parameters())
    return {"preset": preset, "tile": tile, "params": params, "peak_mib": peak, "seconds": seconds}


def bench_segmenter(
    preset: str, tile: int, *, size: tuple[int, int], batch_size: int, repeats: int, device: torch.device
) -> dict:
    """Peak MiB and median seconds of a tiled segmentation of a random ``size`` image, measured in a
    fresh process (spawned), so that each configuration's peak is its own: on CPU the peak resident
    memory of that whole process (Python, torch, model, image, activations)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_measure, (preset, tile, size, batch_size, repeats, str(device)))


def markdown(rows: list[dict], size: tuple[int, int], checks: list[dict]) -> str:
    lines = [
        f"Segmenter (MoFME, 19 classes) on a {size[0]} x {size[1]} image, tiled",
        "",
        "| preset | params | tile | peak MiB | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['preset']} | {r['params'] / 1e6:.2f}M | {r['tile']} | {r['peak_mib']:.0f} | {r['seconds']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines + targets_markdown(checks))


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m mofme.benchmarks.segmenter", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--tiles", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--targets", type=Path, default=None, help="check against this file's [segmenter] limits"
    )
    args = parser.parse_args(argv)
    limits = load_limits(args.targets, "segmenter") if args.targets else {}
    device, size = torch.device(args.device), tuple(args.size)
    rows = []
    for preset in args.presets:
        for tile in args.tiles:
            rows.append(
                bench_segmenter(
                    preset, tile, size=size, batch_size=args.batch_size, repeats=args.repeats, device=device
                )
            )
            print(
                f"{preset} tile={tile}: {rows[-1]['peak_mib']:.0f} MiB, {rows[-1]['seconds']:.2f} s",
                flush=True,
            )
    measured = {f"{r['preset']} tile={r['tile']}: peak GiB": r["peak_mib"] / 1024 for r in rows}
    checks = check_targets(measured, limits)
    print()
    print(markdown(rows, size, checks))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}
        result = {
            "machine": machine(),
            "settings": settings,
            "rows": rows,
            "ratios": measured,
            "targets": checks,
        }
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
