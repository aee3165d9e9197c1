"""CPU fast-path benchmark: ``restore_image`` of one photo-sized image, plain vs fast, side by side.

    python -m mofme.benchmarks.fastpath --size 4000x3000 --json docs/results/fastpath.json

The image is a built-in test photo resized (bicubic) to ``--size`` (width x height). Both paths run the
whole tiled restoration that ``mofme restore`` runs (``--tile`` / ``--overlap``, the model in eval mode,
the fast path's copy built inside every fast call), interleaved repeat by repeat, median seconds after
``--warmup`` calls. Peak memory: the process's peak resident memory during one call, and its rise over
the start of the call (:func:`~mofme.timing.peak_rss_mb`; Linux). ``max_abs_diff``: the
largest difference between the two restored images (outputs in [0, 1]). Threads: torch's default
unless ``--threads``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from mofme.benchmarks import write_json
from mofme.data import builtin_photos
from mofme.data.transforms import to_tensor
from mofme.infer.restore import restore_image
from mofme.models import DEFAULT_WEIGHTS, build_restorer, load_restorer
from mofme.timing import machine, peak_rss_mb, time_side_by_side

__all__ = ["main", "parse_size", "run"]

PHOTO = "rocket"  # a built-in test photo


def parse_size(text: str) -> tuple[int, int]:
    """``"4000x3000"`` (width x height) -> (height, width)."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 4000x3000, got {text!r}") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return height, width


def photo_of_size(height: int, width: int) -> torch.Tensor:
    """The built-in test photo :data:`PHOTO` resized to (3, height, width), float32 in [0, 1]."""
    photo = dict(builtin_photos("test", long_side=None))[PHOTO]
    image = to_tensor(photo)[None]
    return F.interpolate(image, size=(height, width), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _model(args: argparse.Namespace) -> torch.nn.Module:
    if args.preset is None:
        return load_restorer(args.checkpoint)
    torch.manual_seed(0)
    return build_restorer(preset=args.preset, ffn=args.ffn).eval()


def run(args: argparse.Namespace) -> dict:
    """Time, measure and compare both paths; print the table and write ``--json``; the result."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model = _model(args)
    height, width = args.size
    image = photo_of_size(height, width)
    options = {"tile": args.tile, "overlap": args.overlap}
    calls = {
        name: (lambda fast=fast: restore_image(model, image, fast=fast, **options))
        for name, fast in (("plain", False), ("fast", True))
    }
    outputs = {name: call() for name, call in calls.items()}
    memory = {name: peak_rss_mb(call) or (None, None) for name, call in calls.items()}
    seconds = time_side_by_side(calls, warmup=args.warmup, repeats=args.repeats, device=torch.device("cpu"))
    speedup = seconds["plain"] / seconds["fast"]
    result = {
        "machine": machine(),
        "settings": {
            "size": f"{width}x{height}",
            "model": args.checkpoint if args.preset is None else f"{args.preset} preset, ffn={args.ffn}",
            **options,
            "warmup": args.warmup,
            "repeats": args.repeats,
        },
        "rows": [
            {
                "path": name,
                "median_s": seconds[name],
                "peak_rss_mb": memory[name][0],
                "rise_mb": memory[name][1],
            }
            for name in calls
        ],
        "speedup": speedup,
        "max_abs_diff": float((outputs["plain"] - outputs["fast"]).abs().max()),
    }
    print(markdown(result))
    write_json(args.json, result)
    return result


def markdown(result: dict) -> str:
    """The result as a Markdown table with its settings."""
    s = result["settings"]
    lines = [
        f"restore_image of a {s['size']} photo, {s['model']}, tile {s['tile']} overlap {s['overlap']}, "
        f"{result['machine']['cpu_threads']} thread(s), median of {s['repeats']}",
        "",
        "| path | median s | x plain | peak RSS MiB | rise MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    plain = result["rows"][0]["median_s"]
    for row in result["rows"]:
        memory = [f"{mb:.0f}" if mb is not None else "-" for mb in (row["peak_rss_mb"], row["rise_mb"])]
        lines.append(
            f"| {row['path']} | {row['median_s']:.2f} | {plain / row['median_s']:.2f} | {' | '.join(memory)} |"
        )
    lines.append(f"\nmax |fast - plain| = {result['max_abs_diff']:.1e} (outputs in [0, 1])")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=parse_size, default=parse_size("4000x3000"), help="WIDTHxHEIGHT")
    parser.add_argument("--preset", default=None, help="time a fresh preset instead (small | paper | tiny)")
    parser.add_argument("--ffn", default="mofme", help="with --preset: dense | moe | mofme")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    add_restore_arguments(parser)


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every photo-size restoration benchmark takes: the model, the tiling, the threads
    and where the JSON goes."""
    parser.add_argument("--checkpoint", default=DEFAULT_WEIGHTS, help="a saved restorer (default: shipped)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m mofme.benchmarks.fastpath", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
