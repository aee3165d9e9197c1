"""``mofme demo``: parses the output folder, checkpoint and ``--train`` options; the work is
:func:`mofme.apps.demo.run_demo`."""

from __future__ import annotations

import argparse

from ._common import Subcommands


def run(args: argparse.Namespace) -> int:
    from mofme.apps.demo import run_demo

    result = run_demo(
        args.output, checkpoint=args.checkpoint, train=args.train, seed=args.seed, overrides=args.overrides
    )
    gain = result.report.mean_over_weather.gain
    print(f"mean PSNR gain over the degraded input on the held-out photos: {gain:+.2f} dB")
    return 0


def add_parser(commands: Subcommands) -> None:
    """mofme demo."""
    demo = commands.add_parser(
        "demo", help="restore and score the built-in test split with the shipped weights (or --train)"
    )
    demo.add_argument("--output", default="mofme-demo", help="output folder (default: mofme-demo)")
    demo.add_argument("--checkpoint", default=None, help="a saved model instead of the shipped weights")
    demo.add_argument(
        "--train", action="store_true", help="first train a small restorer from scratch (fixed step count)"
    )
    demo.add_argument("--seed", type=int, default=0, help="training seed (with --train)")
    demo.add_argument("overrides", nargs="*", help="recipe overrides with --train, e.g. model.router=uar")
    demo.set_defaults(func=run)
