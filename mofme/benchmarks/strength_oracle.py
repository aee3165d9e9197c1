"""The ceiling of a calibrated strength: how much of a restorer's correction each image should get,
known its clean target (an oracle), per validation group.

    mofme bench strength-oracle --checkpoint runs/weather_unet_local_full/best \
        --recipe configs/weather_unet_local_full.yaml --json docs/results/strength_oracle/unet_local_full.json
    mofme bench strength-oracle --checkpoint runs/weather_unet_local_full/best \
        --photos data/photos/train --stride 8 --families haze-classic rain-classic --seed 7

For each weathered item of the recipe's validation set (``--seed``: its renders), or with ``--photos``
of the renders of ``--families`` on every ``--stride``-th photo of a folder (e.g. training photos,
to see what a strength fitted on them would learn), with x the input,
r the restorer's output, y the target and c = r - x, the PSNR of the output x + s c clipped to
[0, 1] for:

* ``base``: s = 1 (the restorer as it is);
* ``oracle_1`` / ``oracle_max``: the least-squares s* = <c, y - x> / |c|^2, clipped to [0, 1] (what
  a ``restorer_calibrated`` of ``max_strength`` 1 could reach at best) or to [0, ``--max-strength``];
* ``oracle_bands``: one strength for the correction's low frequencies (Gaussian of ``--sigma`` px at
  the working size: :func:`~mofme.models.strength.low_band`, the bands of a two-band strength)
  in [0, ``--max-strength``] and one for the rest in [0, 1], least squares on the two, then clipped.

A large gap between ``base`` and the oracles says the correction holds more than the restorer
applies; a learned strength can only reach what its evidence lets it predict, so the oracles bound it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from mofme.metrics import psnr
from mofme.models.strength import low_band
from mofme.timing import machine

__all__ = ["main", "oracle_scores", "oracle_strengths"]

KINDS = ("input", "base", "oracle_1", "oracle_max", "oracle_bands")


def oracle_strengths(
    image: Tensor, restored: Tensor, target: Tensor, *, sigma: float
) -> tuple[float, float, float]:
    """For one (1, 3, H, W) triple: s* (one strength) and (s_low, s_high), the least-squares strengths
    of the correction's low and high frequencies, unclipped."""
    change = restored - image
    return _strengths(change, low_band(change, sigma), target - image)


def _strengths(change: Tensor, low: Tensor, error: Tensor) -> tuple[float, float, float]:
    change, low, error = change.double(), low.double(), error.double()
    single = float((change * error).sum() / (change.square().sum() + 1e-20))
    parts = torch.stack([low.flatten(), (change - low).flatten()], 1)
    gram = parts.T @ parts + 1e-12 * torch.eye(2, dtype=torch.float64)
    low_high = torch.linalg.solve(gram, parts.T @ error.flatten())
    return single, float(low_high[0]), float(low_high[1])


def oracle_scores(
    image: Tensor, restored: Tensor, target: Tensor, *, max_strength: float = 4.0, sigma: float = 4.0
) -> dict[str, float]:
    """PSNR (dB) of each of :data:`KINDS` for one (1, 3, H, W) triple in [0, 1] (module docstring),
    and the unclipped strengths ``s``, ``s_low``, ``s_high``."""
    change = restored - image
    low = low_band(change, sigma)
    single, s_low, s_high = _strengths(change, low, target - image)

    def score(output: Tensor) -> float:
        return float(psnr(output.clamp(0, 1), target))

    return {
        "input": score(image),
        "base": score(restored),
        "oracle_1": score(image + min(max(single, 0.0), 1.0) * change),
        "oracle_max": score(image + min(max(single, 0.0), max_strength) * change),
        "oracle_bands": score(
            image + min(max(s_low, 0.0), max_strength) * low + min(max(s_high, 0.0), 1.0) * (change - low)
        ),
        "s": single,
        "s_low": s_low,
        "s_high": s_high,
    }


def _items(args: argparse.Namespace) -> list[dict]:
    """The weathered items to score: the recipe's validation set, or renders of ``--photos``."""
    from mofme.data.photos import family_renders, folder_photos
    from mofme.train.config import load_config
    from mofme.train.data import validation_set

    if args.photos is None:
        items = validation_set(load_config(args.recipe).data, seed=args.seed)
        return [item for item in items if item["weather"] != "clean"]
    sources = folder_photos(args.photos, long_sides=(args.long_side,))[:: args.stride]
    return family_renders([(s.name, s.versions[0]) for s in sources], args.families, seed=args.seed)


@torch.no_grad()
def bench_strength_oracle(
    checkpoint: str, items: list[dict], *, max_strength: float, sigma: float
) -> dict[str, dict[str, float]]:
    """Group (family) -> mean of each of :data:`KINDS` and median strengths, over ``items`` (dicts
    with ``input``, ``target`` (3, H, W) and ``weather``, the group) restored by ``checkpoint``
    (whole images, eval mode)."""
    from mofme.models import load_restorer

    model = load_restorer(checkpoint).eval()
    rows: dict[str, list[dict[str, float]]] = {}
    for item in tqdm(items, desc="oracle"):
        image, target = item["input"][None].float(), item["target"][None].float()
        restored = model(image).image.float().clamp(0, 1)
        rows.setdefault(str(item["weather"]), []).append(
            oracle_scores(image, restored, target, max_strength=max_strength, sigma=sigma)
        )
    summary = {
        group: {
            **{kind: float(np.mean([r[kind] for r in scores])) for kind in KINDS},
            **{f"median_{k}": float(np.median([r[k] for r in scores])) for k in ("s", "s_low", "s_high")},
            "images": len(scores),
        }
        for group, scores in rows.items()
    }
    summary["mean"] = {kind: float(np.mean([summary[g][kind] for g in rows])) for kind in KINDS}
    return summary


def _table(summary: dict[str, dict[str, float]]) -> str:
    lines = [
        "| group | images | " + " | ".join(KINDS) + " | median s | median s_low / s_high |",
        "|---|---:|" + "---:|" * len(KINDS) + "---:|---:|",
    ]
    for group, row in summary.items():
        cells = [group, str(row.get("images", "")), *(f"{row[k]:.2f}" for k in KINDS)]
        if "median_s" in row:
            cells += [f"{row['median_s']:.2f}", f"{row['median_s_low']:.2f} / {row['median_s_high']:.2f}"]
        else:
            cells += ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the restorer (a folder or a shipped name)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--recipe", help="a training recipe: its validation set is scored")
    source.add_argument("--photos", help="a folder of photos: --families rendered on them are scored")
    parser.add_argument("--families", nargs="+", default=["haze-classic", "rain-classic"], metavar="NAME")
    parser.add_argument("--long-side", type=int, default=320, help="--photos resized to this (default 320)")
    parser.add_argument("--stride", type=int, default=1, help="every N-th of --photos, sorted (default 1)")
    parser.add_argument("--seed", type=int, default=2031, help="the renders' seed (default 2031)")
    parser.add_argument("--max-strength", type=float, default=4.0, help="the oracles' upper clip (default 4)")
    parser.add_argument("--sigma", type=float, default=4.0, help="the low band's Gaussian, px (default 4)")
    parser.add_argument("--json", type=Path, help="write the settings, machine and table here")
    args = parser.parse_args(argv)
    summary = bench_strength_oracle(
        args.checkpoint, _items(args), max_strength=args.max_strength, sigma=args.sigma
    )
    print(_table(summary))
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        record = {"machine": machine(), "settings": settings, "groups": summary}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
