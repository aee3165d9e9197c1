import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    """Under pytest-xdist each worker gets one intra-op thread: two workers x two threads would
    oversubscribe a 2-core machine and slow every test several-fold."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
