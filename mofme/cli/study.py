"""``mofme study run [options]`` (the equal-budget study, :func:`mofme.studies.study.run_study`) and
``mofme study downstream [args...]`` (handed to :func:`mofme.studies.downstream.main`). ``mofme study
--opts`` is still read as ``mofme study run --opts``, with a FutureWarning."""

from __future__ import annotations

import argparse

from ._common import Subcommands, add_forwarding, warn_old_spelling

STUDIES = ("run", "downstream")


def run(args: argparse.Namespace) -> int:
    from mofme.studies.study import load_settings, run_study

    run_study(
        args.output,
        minutes_per_run=args.minutes_per_run,
        seeds=args.seeds,
        variants=args.variants,
        settings=load_settings(args.settings) if args.settings else None,
        experts=args.experts,
        recipe=args.recipe,
        steps=args.steps or None,
        overrides=args.overrides,
        command=args.command_line,
    )
    return 0


def add_parser(commands: Subcommands) -> None:
    """mofme study {run,downstream}."""
    study = commands.add_parser(
        "study",
        help="dense vs MoE vs MoFME at an equal budget: restoration (run) or recognition (downstream)",
    )
    studies = study.add_subparsers(dest="study", required=True, title="studies", help="the study run")
    _add_run(studies)
    add_forwarding(
        studies,
        "downstream",
        "mofme.studies.downstream",
        "dense vs MoE vs MoFME on a built-in recognition task, several seeds",
    )


def _add_run(studies: Subcommands) -> None:
    """mofme study run: today's study options."""
    from mofme.studies.study import DEFAULT_STEPS, RECIPE, STUDY_VARIANTS

    study = studies.add_parser(
        "run", help="dense vs MoE vs MoFME (linear, UaR) at an equal budget, with routing analysis"
    )
    study.add_argument("--output", default="mofme-study", help="the study's folder (default: mofme-study)")
    study.add_argument(
        "--minutes-per-run", type=float, default=4.0, help="with --steps 0: the slowest variant's budget"
    )
    study.add_argument("--seeds", type=int, default=3, help="runs per variant, seeds 0.. (default 3)")
    study.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help=f"variants to run (default: all of {', '.join(STUDY_VARIANTS)} and those of --settings)",
    )
    study.add_argument(
        "--recipe",
        default=RECIPE,
        help="every run's base recipe, a shipped name or YAML path (e.g. allweather_paper_mofme on a GPU)",
    )
    study.add_argument(
        "--settings", help="YAML file of more named variants, name: [override, ...] (e.g. a routing sweep)"
    )
    study.add_argument(
        "--experts",
        nargs="+",
        type=int,
        help="scaling study: run every routed variant once per number of experts (same k), e.g. 4 16 64 128",
    )
    study.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help="optimiser steps of every run (0: fit them to --minutes-per-run on this machine)",
    )
    study.add_argument(
        "overrides", nargs="*", help="recipe overrides for every run, e.g. model.num_experts=8"
    )
    study.set_defaults(func=run)


def current_spelling(argv: list[str]) -> list[str]:
    """``study [--opts]`` (no study named) -> ``study run [--opts]``, with a FutureWarning; any other
    ``argv`` as it is."""
    if argv[:1] == ["study"] and argv[1:2] not in (["run"], ["downstream"], ["-h"], ["--help"]):
        warn_old_spelling("mofme study without a study", "mofme study run")
        return ["study", "run", *argv[1:]]
    return argv
