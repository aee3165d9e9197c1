"""The renderer families side by side: how much each degrades, how long it takes, what it looks like.

    python -m mofme.benchmarks.families --output docs/results/families

For every registered family (:mod:`mofme.data.families`) and severity: PSNR of the render against the
clean photo (min / mean / max over the built-in photos at ``--long-side`` and seeds 0..``--seeds``-1)
and the median render time of one photo; ``families.json``, ``families.md`` and ``families.png`` (one
built-in test photo at severity 2 under every family, one row per weather type).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio

from mofme.data import BUILTIN_SPLITS, WEATHER_TYPES, builtin_photos
from mofme.data.families import FAMILIES, families_of, render_family

__all__ = ["family_table", "gallery", "main"]


def family_table(photos: Sequence[tuple[str, np.ndarray]], seeds: int) -> dict[str, dict]:
    """Per family and severity: PSNR min / mean / max over ``photos`` x seeds, median seconds."""
    table: dict[str, dict] = {}
    for family in sorted(FAMILIES):
        table[family] = {}
        for severity in (1, 2, 3):
            scores, seconds = [], []
            for _, photo in photos:
                for seed in range(seeds):
                    start = time.perf_counter()
                    sample = render_family(photo, family, severity=severity, seed=seed)
                    seconds.append(time.perf_counter() - start)
                    scores.append(peak_signal_noise_ratio(photo, sample.degraded, data_range=1.0))
            table[family][severity] = {
                "psnr_min": float(np.min(scores)),
                "psnr_mean": float(np.mean(scores)),
                "psnr_max": float(np.max(scores)),
                "seconds": float(np.median(seconds)),
            }
    return table


def gallery(photo: np.ndarray, path: Path, *, severity: int = 2) -> Path:
    """``photo`` under every family at ``severity``: one row per weather type, one column per family."""
    from mofme.apps.plots import pyplot

    plt = pyplot()
    columns = max(len(families_of(w)) for w in WEATHER_TYPES)
    fig, axes = plt.subplots(len(WEATHER_TYPES), columns, figsize=(3 * columns, 2.4 * len(WEATHER_TYPES)))
    for row, weather in enumerate(WEATHER_TYPES):
        for col in range(columns):
            ax = axes[row][col]
            ax.set_axis_off()
            names = families_of(weather)
            if col < len(names):
                ax.imshow(render_family(photo, names[col], severity=severity, seed=0).degraded)
                ax.set_title(names[col], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _markdown(table: dict[str, dict], meta: dict) -> str:
    lines = [", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    lines += [
        "| family | severity 1 PSNR | severity 2 PSNR | severity 3 PSNR | ms (sev. 2) |",
        "|---|---|---|---|---:|",
    ]
    for family, rows in table.items():
        cells = [f"{r['psnr_min']:.1f} / {r['psnr_mean']:.1f} / {r['psnr_max']:.1f}" for r in rows.values()]
        lines.append(f"| {family} | {' | '.join(cells)} | {1000 * rows[2]['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder for families.json, .md and .png")
    parser.add_argument("--long-side", type=int, default=512, help="the photos' long side (default 512)")
    parser.add_argument("--seeds", type=int, default=3, help="renders per photo, family and severity")
    args = parser.parse_args(argv)
    photos = [p for split in BUILTIN_SPLITS for p in builtin_photos(split, long_side=args.long_side)]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    gallery(dict(builtin_photos("test", long_side=args.long_side))["china"], output / "families.png")
    table = family_table(photos, args.seeds)
    meta = {
        "photos": len(photos),
        "long_side": args.long_side,
        "seeds": args.seeds,
        "psnr": "min / mean / max dB",
    }
    (output / "families.json").write_text(json.dumps({"meta": meta, "families": table}, indent=2))
    (output / "families.md").write_text(_markdown(table, meta))
    print(_markdown(table, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
