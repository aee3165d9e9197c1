"""``mofme train``: parses the recipe, its overrides and ``--resume``; the work is
:func:`mofme.train.trainer.train`."""

from __future__ import annotations

import argparse

from ._common import Subcommands


def run(args: argparse.Namespace) -> int:
    import mofme.studies  # noqa: F401  (registers the study's loss.extra terms)
    from mofme.configs import recipe_path
    from mofme.train.config import load_config
    from mofme.train.trainer import train

    config = load_config(recipe_path(args.config), args.overrides)
    if args.fit_strength:
        from mofme.train.strength import fit_from_config

        record = fit_from_config(config, renders=args.fit_strength)
        scores = record["scores"]
        print(
            f"fitted the strength on {args.fit_strength} renders in {record['minutes']:.1f} min; validation "
            f"psnr {scores['mean']:.2f} dB, clean photos' worst {scores.get('clean_min', float('nan')):.2f} dB; "
            f"model: {config.train.output_dir}/best"
        )
        return 0
    result = train(config, resume=args.resume)
    best = "n/a" if result.best_score is None else f"{result.best_score:.4g}"
    unit = " dB" if result.metric == "psnr" and result.best_score is not None else ""
    print(
        f"trained {result.steps} steps in {result.minutes:.1f} min; best validation {result.metric} "
        f"{best}{unit}; best model: {result.best_dir}"
    )
    return 0


def add_parser(commands: Subcommands) -> None:
    """mofme train."""
    train = commands.add_parser("train", help="train a restorer from a YAML recipe")
    train.add_argument("config", help="YAML file, or the name of a shipped recipe (e.g. demo_cpu)")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.lr=2e-4")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    train.add_argument(
        "--fit-strength",
        type=int,
        metavar="RENDERS",
        help="restorer_calibrated recipes: instead of the training loop, run the fixed base once on "
        "RENDERS training renders and fit the strength on them full-batch (mofme.train.strength)",
    )
    train.set_defaults(func=run)
