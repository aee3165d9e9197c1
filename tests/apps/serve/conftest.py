import contextlib

import pytest

from mofme.models import DEFAULT_WEIGHTS, load_restorer

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'mofme[serve]'")


@pytest.fixture(scope="session")
def shipped_model():
    """The shipped restorer (eval mode, CPU)."""
    return load_restorer(DEFAULT_WEIGHTS)


@pytest.fixture
def serve(shipped_model):
    """``serve(base_url=LOCAL, host=..., token=..., **settings)``: a TestClient of an app with the shipped
    model, shut down after the test."""
    from fastapi.testclient import TestClient

    from mofme.apps.serve import ServeSettings, create_app

    from .client import FAST, LOCAL

    with contextlib.ExitStack() as stack:

        def make(base_url: str = LOCAL, host: str = "127.0.0.1", token: str | None = None, **settings):
            app = create_app(
                model=shipped_model, settings=ServeSettings(**{**FAST, **settings}), host=host, token=token
            )
            return stack.enter_context(TestClient(app, base_url=base_url))

        yield make
