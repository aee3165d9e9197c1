"""Weather renderer speed: median seconds per render of each weather type and severity.

    python -m mofme.benchmarks.render --size 512 --repeats 5 --output docs/results/render.json

Rendering runs inside the training data loader (``data.type: builtin`` and ``folder``), so its cost
adds to every training step that renders its crops (docs/results/render.md has the figures).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mofme.data import SEVERITIES, WEATHER_TYPES, render_weather
from mofme.timing import machine

__all__ = ["main", "measure"]


def measure(size: int, repeats: int) -> dict[str, dict[int, float]]:
    """Median seconds of ``render_weather`` on a random size x size image, per weather and severity."""
    image = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
    result: dict[str, dict[int, float]] = {}
    for weather in WEATHER_TYPES:
        result[weather] = {}
        for severity in SEVERITIES:
            samples = []
            for seed in range(repeats):
                start = time.perf_counter()
                render_weather(image, weather, severity=severity, seed=seed)
                samples.append(time.perf_counter() - start)
            result[weather][severity] = statistics.median(samples)
    return result


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    seconds = measure(args.size, args.repeats)
    lines = [
        f"| weather | {' | '.join(f's{s} (ms)' for s in SEVERITIES)} |",
        "|---" + "|---:" * len(SEVERITIES) + "|",
    ]
    lines += [f"| {w} | {' | '.join(f'{1e3 * t:.0f}' for t in row.values())} |" for w, row in seconds.items()]
    print("\n".join(lines))
    if args.output is not None:
        report = {"machine": machine(), "size": args.size, "repeats": args.repeats, "seconds": seconds}
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
