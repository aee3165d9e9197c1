"""How a restorer does on weather drawn in ways it never trained on, and on photos with no weather.

    python -m mofme.benchmarks.generalisation --checkpoints runs/families/best mofme-small-weather \
        --held-out rain-noise snow-bokeh haze-fractal raindrop-blur \
        --clean-folder data/photos/clean --output docs/results/generalisation

For every checkpoint, side by side (:func:`mofme.evaluate.restoration.evaluate`, its conventions: RGB,
8-bit outputs, full resolution):

* ``held_out``: each held-out family on the built-in test photos (2 photos x 3 severities x 4
  renders, the seeds of the built-in test split) and, with ``--clean-folder``, on those photos too
  (one render per severity at ``--long-side``): photos neither trained on nor used for selection.
* ``trained``: every other registered family on the built-in test photos (for context).
* ``builtin``: the built-in test split as ``mofme demo`` scores it (the classic renderer).
* ``clean``: each clean photo restored whole at ``--long-side``, PSNR of the output from its own
  input (higher = less altered; the do-no-harm target is >= 38 dB), and the largest difference
  between that and a tiled restore (``--tile`` / ``--overlap`` asked; a windowed model tiles
  exactly on its own grid, :func:`~mofme.infer.restore.model_tiling`; a seam shows as a large value).

Writes ``report.json`` and ``report.md`` under ``--output``. Nothing here trains or selects.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from mofme.data import BuiltinWeatherDataset
from mofme.data.builtin import builtin_family_items
from mofme.data.families import FAMILIES
from mofme.data.photos import family_renders, folder_photos
from mofme.data.transforms import to_tensor
from mofme.evaluate.restoration import EvalReport, evaluate, finite_or_str
from mofme.infer.restore import restore_image
from mofme.metrics import psnr, quantize
from mofme.models import load_model

__all__ = ["clean_check", "family_report", "main"]


def _groups(report: EvalReport) -> dict[str, dict[str, float]]:
    return {name: group.to_dict() for name, group in report.per_weather.items()}


def family_report(model: nn.Module, items: list[dict]) -> dict[str, dict[str, float]]:
    """Mean input / restored PSNR, SSIM and gain per group of ``items`` (whole images)."""
    return _groups(evaluate(model, items, progress=False))


def clean_check(
    model: nn.Module, photos: Sequence[tuple[str, Any]], *, tile: int, overlap: int
) -> list[dict[str, float]]:
    """Per clean photo: ``psnr`` of the whole-image output from its input (8-bit, RGB) and
    ``tiled_max_diff``, the largest absolute difference (in 1/255 steps, before rounding to 8 bits)
    between the whole and the tiled restore."""
    rows = []
    for name, photo in photos:
        image = to_tensor(photo)
        whole_tile = -(-max(image.shape[1:]) // 64) * 64  # one tile: the whole photo
        whole = restore_image(model, image, tile=whole_tile, overlap=0)
        tiled = restore_image(model, image, tile=tile, overlap=overlap, whole_pixels=0)  # always tiled
        value = psnr(quantize(whole)[None], quantize(image)[None]).item()
        steps = (whole - tiled).abs().max().item() * 255
        rows.append({"photo": name, "psnr": value, "tiled_max_diff": round(steps, 3)})
    return rows


def _evaluate_checkpoint(name: str, args: argparse.Namespace, photos: list) -> dict[str, Any]:
    model = load_model(name)
    held_out = family_report(model, builtin_family_items("test", args.held_out))
    result: dict[str, Any] = {"held_out": held_out}
    if photos:
        result["held_out_clean_photos"] = family_report(model, family_renders(photos, args.held_out))
        result["clean"] = clean_check(model, photos, tile=args.tile, overlap=args.overlap)
    trained = [f for f in sorted(FAMILIES) if f not in args.held_out]
    result["trained"] = family_report(model, builtin_family_items("test", trained))
    result["builtin"] = family_report(model, list(BuiltinWeatherDataset("test")))
    return result


def _mean_gain(groups: dict[str, dict[str, float]]) -> float:
    return sum(g["gain"] for g in groups.values()) / len(groups)


def _family_table(title: str, results: dict[str, dict], key: str) -> list[str]:
    names = list(results)
    groups = list(next(iter(results.values()))[key])
    lines = [f"### {title}", "", "| group | input PSNR | " + " | ".join(f"{n} gain dB" for n in names) + " |"]
    lines.append("|---|---:|" + "---:|" * len(names))
    for group in groups:
        first = results[names[0]][key][group]
        gains = " | ".join(f"{results[n][key][group]['gain']:+.2f}" for n in names)
        lines.append(f"| {group} | {first['input_psnr']:.2f} | {gains} |")
    means = " | ".join(f"**{_mean_gain(results[n][key]):+.2f}**" for n in names)
    return [*lines, f"| **mean** | | {means} |", ""]


def _clean_table(results: dict[str, dict]) -> list[str]:
    names = [n for n in results if "clean" in results[n]]
    if not names:
        return []
    head = " | ".join(f"{n} PSNR from input | {n} tiled vs whole (1/255)" for n in names)
    lines = ["### Clean photos (output vs its own input)", "", f"| photo | {head} |"]
    lines.append("|---|" + "---:|---:|" * len(names))
    for index, row in enumerate(results[names[0]]["clean"]):
        cells = " | ".join(
            f"{results[n]['clean'][index]['psnr']:.2f} | {results[n]['clean'][index]['tiled_max_diff']:.1f}"
            for n in names
        )
        lines.append(f"| {row['photo']} | {cells} |")
    mins = " | ".join(
        f"**{min(r['psnr'] for r in results[n]['clean']):.2f}** | "
        f"**{max(r['tiled_max_diff'] for r in results[n]['clean']):.1f}**"
        for n in names
    )
    return [*lines, f"| **worst** | {mins} |", ""]


def to_markdown(results: dict[str, dict], meta: dict[str, Any]) -> str:
    """The report's tables: held-out families, clean photos, trained families, built-in split."""
    lines = ["# Generalisation report", "", ", ".join(f"{k}: {v}" for k, v in meta.items()), ""]
    first = next(iter(results.values()))
    lines += _family_table("Held-out families, built-in test photos", results, "held_out")
    if "held_out_clean_photos" in first:
        lines += _family_table("Held-out families, clean-set photos", results, "held_out_clean_photos")
    lines += _clean_table(results)
    lines += _family_table("Trained families, built-in test photos", results, "trained")
    lines += _family_table("Built-in test split (classic renderer)", results, "builtin")
    return "\n".join(lines)


def _parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", nargs="+", required=True, help="saved models or shipped names")
    parser.add_argument("--held-out", nargs="+", required=True, help="the families held out of training")
    parser.add_argument("--clean-folder", default=None, help="weather-free photos never trained on")
    parser.add_argument("--long-side", type=int, default=512, help="clean photos are used at this size")
    parser.add_argument("--tile", type=int, default=256, help="tile of the tiled-vs-whole comparison")
    parser.add_argument("--overlap", type=int, default=32, help="overlap of the tiled-vs-whole comparison")
    parser.add_argument("--output", required=True, help="folder for report.json and report.md")
    return parser


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    args = _parser(prog).parse_args(argv)
    unknown = [f for f in args.held_out if f not in FAMILIES]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; registered: {sorted(FAMILIES)}")
    photos = []
    if args.clean_folder:
        photos = [
            (s.name, s.versions[0]) for s in folder_photos(args.clean_folder, long_sides=(args.long_side,))
        ]
    results = {name: _evaluate_checkpoint(name, args, photos) for name in args.checkpoints}
    meta = {"held_out": " ".join(args.held_out), "clean_photos": len(photos), "long_side": args.long_side}
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(
        json.dumps(finite_or_str({"meta": meta, "results": results}), indent=2)
    )
    (output / "report.md").write_text(to_markdown(results, meta) + "\n")
    print(to_markdown(results, meta))
    return 0 if all(math.isfinite(_mean_gain(r["held_out"])) for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
