"""``mofme masks``: parses the photos, output folder, segmenter and tiling options; the work is
:func:`mofme.infer.masks.weather_masks`."""

from __future__ import annotations

import argparse

from ._common import Subcommands, report_failed


def run(args: argparse.Namespace) -> int:
    from mofme.infer.masks import weather_masks
    from mofme.models import load_model

    model = load_model(args.checkpoint, device=args.device)
    result = weather_masks(model, args.inputs, args.output, tile=args.tile, overlap=args.overlap)
    print(f"wrote the weather masks of {len(result.fractions)} photo(s) and {result.report}")
    return report_failed(result.failed)


def add_parser(commands: Subcommands) -> None:
    """mofme masks."""
    masks = commands.add_parser(
        "masks",
        help="weather masks of your own photos (files or folders, any size) by a degradation segmenter: "
        "colour-coded mask and overlay PNGs, masks.json with each class's share of the pixels",
    )
    masks.add_argument("inputs", nargs="+", help="image files and folders (searched recursively)")
    masks.add_argument("--output", required=True, help="folder the masks, overlays and masks.json go to")
    masks.add_argument(
        "--checkpoint", required=True, help="a segmenter trained on data.type: degradation (save_pretrained)"
    )
    masks.add_argument("--tile", type=int, default=64, help="tiled-inference window (pixels)")
    masks.add_argument("--overlap", type=int, default=16, help="overlap of the windows")
    masks.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, ... (default cpu)")
    masks.set_defaults(func=run)
