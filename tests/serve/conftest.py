import pytest

from mofme.models import DEFAULT_WEIGHTS, load_restorer

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'mofme[serve]'")


@pytest.fixture(scope="session")
def shipped_model():
    """The shipped restorer (eval mode, CPU)."""
    return load_restorer(DEFAULT_WEIGHTS)
