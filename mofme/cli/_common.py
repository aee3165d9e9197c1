"""What several ``mofme`` commands share: the tiled-inference options, the fast-path switch, the
failed-file report, forwarding a sub-command to a module's ``main(argv, prog)`` and the FutureWarning
of an old spelling."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

DEFAULT_WEIGHTS = (
    "mofme-small-weather-gated"  # = mofme.models.DEFAULT_WEIGHTS; the CLI starts without importing torch
)

Subcommands = argparse._SubParsersAction  # what ArgumentParser.add_subparsers returns


def tiled_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --tile, --overlap, --device of the commands that restore whole photos."""
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_WEIGHTS,
        help=f"a save_pretrained directory (config.json + model.safetensors) or a shipped model "
        f"(default: {DEFAULT_WEIGHTS}, the weights in the package)",
    )
    p.add_argument(
        "--tile", type=int, default=256, help="tiled-inference window (pixels; default %(default)s)"
    )
    p.add_argument(
        "--overlap", type=int, default=32, help="overlap of the windows (pixels; default %(default)s)"
    )
    p.add_argument(
        "--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1, ... (default cpu)"
    )


def fast_path_argument(p: argparse.ArgumentParser) -> None:
    """--no-fast of the commands that restore on the CPU."""
    p.add_argument(
        "--no-fast",
        dest="fast",
        action="store_false",
        help="restorers on the CPU: run the plain modules instead of the inference fast path "
        "(oneDNN, channels-last; the same outputs to float32 rounding)",
    )


def report_failed(failed: list) -> int:
    """Name each ``(path, reason)`` that could not be processed on stderr; the exit status."""
    for path, reason in failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    return 1 if failed else 0


def add_forwarding(commands: Subcommands, name: str, module: str, help: str) -> None:
    """Sub-command ``name``: its arguments, ``--help`` included, go to ``module.main(argv, prog)``."""
    # no option prefix: every argument, --help included, is the module's (a REMAINDER positional alone
    # leaves a leading --option unparsed)
    forwarding = commands.add_parser(name, help=help, add_help=False, prefix_chars="\0")
    forwarding.add_argument(
        "argv", nargs=argparse.REMAINDER, help=f"the arguments of {module} (`{forwarding.prog} --help`)"
    )
    forwarding.set_defaults(func=forward, forward_to=module, forward_prog=forwarding.prog)


def forward(args: argparse.Namespace) -> int:
    """Run the ``main`` of the module a forwarding sub-command names on its arguments; its exit status."""
    module = importlib.import_module(args.forward_to)
    return module.main(args.argv, prog=args.forward_prog)


def warn_old_spelling(old: str, new: str) -> None:
    """The FutureWarning of a command spelled the previous release's way."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; write {new}",
        FutureWarning,
        stacklevel=5,  # the caller of mofme.cli.main
    )
