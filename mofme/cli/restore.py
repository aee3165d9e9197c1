"""``mofme restore``: parses the photos, output folder and tiling options; the work is
:func:`mofme.infer.restore.restore_paths`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import Subcommands, fast_path_argument, report_failed, tiled_arguments


def run(args: argparse.Namespace) -> int:
    from mofme.data.io import IMAGE_EXTENSIONS
    from mofme.infer.restore import plan_outputs, restore_paths
    from mofme.models import load_restorer

    if not plan_outputs(args.inputs, Path(args.output)):  # before loading the model
        raise ValueError(
            f"no images to restore in {', '.join(args.inputs)} (looked for {' '.join(IMAGE_EXTENSIONS)} "
            "files, sub-folders included)"
        )
    model = load_restorer(args.checkpoint, device=args.device)
    result = restore_paths(
        model, args.inputs, args.output, tile=args.tile, overlap=args.overlap, fast=args.fast
    )
    print(f"restored {len(result.written)} image(s) into {args.output}")
    return report_failed(result.failed)


def add_parser(commands: Subcommands) -> None:
    """mofme restore."""
    restore = commands.add_parser("restore", help="restore your own photos (files or folders, any size)")
    restore.add_argument("inputs", nargs="+", help="image files and folders (searched recursively)")
    restore.add_argument(
        "--output", required=True, help="folder the restored images go to (same names and sub-folders)"
    )
    tiled_arguments(restore)
    fast_path_argument(restore)
    restore.set_defaults(func=run)
