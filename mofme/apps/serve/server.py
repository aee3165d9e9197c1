"""Run the app: :func:`run_server` (what ``mofme serve`` calls) and :func:`serve_in_thread` (tests,
benchmarks: a real HTTP server on a free loopback port)."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .settings import ServeSettings

__all__ = ["LOOPBACK", "load_app", "run_server", "serve_in_thread"]

LOOPBACK = "127.0.0.1"


def load_app(*, checkpoint: str | Path, settings: ServeSettings, device: str = "cpu"):
    """The app for the restorer saved at ``checkpoint`` (a folder or a shipped model name)."""
    from mofme.models import load_restorer

    from .app import create_app
    from .card import model_info

    model = load_restorer(checkpoint, device=device)
    return create_app(model=model, settings=settings, info=model_info(model, checkpoint=checkpoint))


def run_server(
    *, checkpoint: str | Path, host: str, port: int, settings: ServeSettings, device: str = "cpu"
) -> None:
    """Serve until interrupted. Pillow's own bomb limit (``Image.MAX_IMAGE_PIXELS``) becomes
    ``settings.max_pixels`` for this process."""
    import uvicorn
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    app = load_app(checkpoint=checkpoint, settings=settings, device=device)
    if host not in (LOOPBACK, "localhost", "::1"):
        print(f"mofme serve: listening on {host}: other machines can reach this server", file=sys.stderr)
    print(f"mofme serve: open http://{'localhost' if host == LOOPBACK else host}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextlib.contextmanager
def serve_in_thread(app, *, host: str = LOOPBACK, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of ``host`` in a daemon thread; yields the base URL
    (``http://127.0.0.1:PORT``) and stops the server on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
