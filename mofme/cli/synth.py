"""``mofme synth``: parses the source, output, weathers / families, severities and seed; the work is
:func:`mofme.data.synthesize_dataset`."""

from __future__ import annotations

import argparse

from ._common import Subcommands


def run(args: argparse.Namespace) -> int:
    from mofme.data import synthesize_dataset
    from mofme.data.families import FAMILIES

    if args.list_families:
        for name, family in sorted(FAMILIES.items()):
            print(f"{name:24s} {family.description}")
        return 0
    if args.source is None or args.output is None:
        raise ValueError("mofme synth needs a source folder of clean photos and --output")

    pairs = synthesize_dataset(
        args.source,
        args.output,
        weathers=tuple(args.weathers),
        severities=tuple(args.severities),
        seed=args.seed,
        families=args.family,
    )
    print(f"wrote {len(pairs)} pairs (Allweather layout, list files included) to {args.output}")
    return 0


def add_parser(commands: Subcommands) -> None:
    """mofme synth."""
    synth = commands.add_parser(
        "synth", help="render weather on your photos into an Allweather-style dataset"
    )
    synth.add_argument("source", nargs="?", help="folder of clean photos")
    synth.add_argument("--output", help="the dataset's folder (input/, gt/, mask/, lists)")
    synth.add_argument(
        "--weathers",
        nargs="+",
        default=["rain", "snow", "haze", "raindrop"],
        help="weather types drawn by the classic renderer (default: all four)",
    )
    synth.add_argument(
        "--family",
        nargs="+",
        default=None,
        metavar="NAME",
        help="renderer families to draw instead (e.g. rain-noise snow-bokeh; `mofme synth --list-families`)",
    )
    synth.add_argument("--list-families", action="store_true", help="print the renderer families and exit")
    synth.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3], help="1 light .. 3 heavy")
    synth.add_argument("--seed", type=int, default=0, help="renders are drawn from this seed (default 0)")
    synth.set_defaults(func=run)
