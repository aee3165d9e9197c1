"""``mofme serve``: restore photos from a local web page (FastAPI + one static page).

    from mofme.apps.serve import ServeSettings, create_app
    app = create_app(model=load_restorer("mofme-small-weather"), settings=ServeSettings(max_pixels=4_000_000))

Needs the ``serve`` extra (``pip install 'mofme[serve]'``): fastapi, uvicorn, python-multipart.
"""

from .app import create_app
from .card import model_info
from .server import load_app, run_server, serve_in_thread
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "load_app", "model_info", "run_server", "serve_in_thread"]
