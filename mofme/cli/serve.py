"""``mofme serve``: parses the address, limits, token and tiling options; the server is
:func:`mofme.apps.serve.run_server`."""

from __future__ import annotations

import argparse

from ._common import Subcommands, tiled_arguments


def run(args: argparse.Namespace) -> int:
    from mofme.apps.serve import ServeSettings, run_server

    settings = ServeSettings(
        max_upload_bytes=round(args.max_upload_mb * 1e6),
        max_pixels=round(args.max_megapixels * 1e6),
        tile=args.tile,
        overlap=args.overlap,
        max_queue=args.max_queue,
    )
    run_server(
        checkpoint=args.checkpoint,
        host=args.host,
        port=args.port,
        settings=settings,
        device=args.device,
        token=args.token,
    )
    return 0


def add_parser(commands: Subcommands) -> None:
    """mofme serve."""
    serve = commands.add_parser(
        "serve",
        help="restore photos from a local web page (needs the serve extra: pip install 'mofme[serve]')",
    )
    tiled_arguments(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    serve.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    serve.add_argument("--max-upload-mb", type=float, default=50.0, help="largest file accepted (MB)")
    serve.add_argument(
        "--max-megapixels", type=float, default=25.0, help="largest image accepted, width x height (MP)"
    )
    serve.add_argument("--max-queue", type=int, default=32, help="photos queued or restoring at once")
    serve.add_argument(
        "--token",
        default=None,
        help="the access token a server bound beyond this machine requires (default: a random one, printed "
        "at start); a server on 127.0.0.1 needs none",
    )
    serve.set_defaults(func=run, tile=128, overlap=16)  # ServeSettings' defaults (measured there)
