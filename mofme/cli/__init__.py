"""The ``mofme`` command line: ``main`` and ``build_parser``; one module per command (demo, train, eval,
restore, serve, masks, synth, bench, study), each parsing its options and calling the library or
application that does the work."""

from __future__ import annotations

import argparse
import sys

from . import bench, demo, evaluate, masks, restore, serve, study, synth, train
from ._common import DEFAULT_WEIGHTS

__all__ = ["DEFAULT_WEIGHTS", "build_parser", "main"]

COMMANDS = (demo, train, evaluate, restore, serve, masks, synth, bench, study)  # in `mofme --help` order
SERVE_MODULES = ("fastapi", "uvicorn", "starlette", "multipart", "python_multipart")


def build_parser() -> argparse.ArgumentParser:
    """The ``mofme`` command line: one sub-command per module of ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="mofme", description="Mixture of Feature-Modulated Experts: restoration toolkit"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def _current_spelling(argv: list[str]) -> list[str]:
    """``argv`` with the previous release's spellings (``bench-layers``, ``bench --opts``, ``study
    --opts``) rewritten, each with a FutureWarning."""
    for command in (bench, study):
        argv = command.current_spelling(argv)
    return argv


def _missing(error: ModuleNotFoundError) -> int:
    """The layer-only install lacks the pipeline's libraries: say which extra brings them."""
    serve = (error.name or "").split(".")[0] in SERVE_MODULES
    needs = "mofme serve needs the serve" if serve else "the command line needs the restoration"
    extra = "serve" if serve else "restoration"
    print(
        f"mofme: error: {error.name} is not installed; {needs} extras: pip install 'mofme[{extra}]'",
        file=sys.stderr,
    )
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run ``mofme ARGV`` (default: the process's arguments); the exit status."""
    argv = _current_spelling(list(sys.argv[1:] if argv is None else argv))
    try:
        args = build_parser().parse_args(argv)
        args.command_line = " ".join(["mofme", *argv])
        return args.func(args)
    except ModuleNotFoundError as error:
        return _missing(error)
    except (FileNotFoundError, ValueError, FileExistsError) as error:
        print(f"mofme {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
