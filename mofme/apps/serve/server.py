"""Run the app: :func:`run_server` (what ``mofme serve`` calls) and :func:`serve_in_thread` (tests,
benchmarks: a real HTTP server on a free loopback port).

A local tool: bound to loopback (the default) it answers requests naming localhost only, and refuses
state-changing requests from other web sites; bound beyond loopback it also requires a token, printed
at start (:mod:`mofme.apps.serve.guard`).

Memory, with Q = ``max_queue``, K = ``keep_results``, U = ``max_upload_bytes``, P = ``max_pixels``:

    server  <=  base (Python, torch, the model)
              + Q x U           uploads arriving or waiting, kept encoded
              + (Q + K) x 6P    held results: an input preview and a restored 8-bit PNG, <= 3 bytes per
                                pixel each (photos compress to about half)
              + ~5 x 12P        the running job: its decoded float32 RGB image, that as a tensor, the
                                restored one and the 8-bit conversion's temporaries (counted from the
                                code, not measured)
              + model activations of one batch of tiles
    decoder <=  its base (Python, torch: it may decode a 16-bit PNG with torchvision) + U + 12P
                (one child process, one decode at a time)

With the defaults (Q 32, K 16, U 50 MB, P 25 MP): at most 1.6 GB of uploads, 7.2 GB of results for
incompressible images, about 1.5 GB for the running job. The decoder process, measured after its
imports: about 0.7 GB resident, mostly torch's shared libraries.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .guard import LOOPBACK, WILDCARDS, is_loopback
from .settings import ServeSettings

__all__ = ["LOOPBACK", "load_app", "page_address", "run_server", "serve_in_thread"]


def load_app(
    *,
    checkpoint: str | Path,
    settings: ServeSettings,
    device: str = "cpu",
    host: str = LOOPBACK,
    token: str | None = None,
):
    """The app for the restorer saved at ``checkpoint`` (a folder or a shipped model name), for a server
    bound to ``host`` (:func:`~mofme.apps.serve.app.create_app`: the token it needs, if any, is
    ``app.state.token``)."""
    from mofme.models import load_restorer

    from .app import create_app
    from .card import model_info

    model = load_restorer(checkpoint, device=device)
    info = model_info(model, checkpoint=checkpoint)
    return create_app(model=model, settings=settings, info=info, host=host, token=token)


def page_address(host: str, port: int, token: str | None) -> str:
    """The address to open: ``http://localhost:PORT/`` on loopback, else with ``?token=``."""
    name = "localhost" if is_loopback(host) else (socket.gethostname() if host in WILDCARDS else host)
    name = f"[{name}]" if ":" in name else name
    return f"http://{name}:{port}/" + (f"?token={token}" if token else "")


def run_server(
    *,
    checkpoint: str | Path,
    host: str,
    port: int,
    settings: ServeSettings,
    device: str = "cpu",
    token: str | None = None,
) -> None:
    """Serve until interrupted. Bound beyond loopback, every request needs ``token`` (a random one,
    printed, when None). Pillow's own bomb limit (``Image.MAX_IMAGE_PIXELS``) becomes
    ``settings.max_pixels`` for this process."""
    import uvicorn
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = settings.max_pixels
    app = load_app(checkpoint=checkpoint, settings=settings, device=device, host=host, token=token)
    if not is_loopback(host):
        print(
            f"mofme serve: listening on {host}: other machines can reach this server; "
            "every request needs the token in the address below",
            file=sys.stderr,
        )
    print(f"mofme serve: open {page_address(host, port, app.state.token)}", flush=True)
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
