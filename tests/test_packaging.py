"""Package layout rules that a refactor could silently break."""

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import mofme

PACKAGE = Path(mofme.__file__).parent
LIBRARY = ("nn", "models", "data", "engine")


def test_library_modules_never_import_the_applications():
    offenders = [
        str(path.relative_to(PACKAGE))
        for part in LIBRARY
        for path in (PACKAGE / part).rglob("*.py")
        if re.search(r"^\s*(from|import)\s+(mofme\.apps|\.\.apps)\b", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []


def test_the_version_is_written_once():
    assert importlib.metadata.version("mofme") == mofme.__version__
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and mofme.__version__ not in pyproject
    assert (PACKAGE / "py.typed").is_file()


_WITHOUT_EXTRAS = """
import sys
for name in {extras!r}:
    sys.modules[name] = None  # as if not installed: importing it raises ModuleNotFoundError
import torch, mofme
layer = mofme.MoFME(dim=16, num_experts=4, top_k=2, router="uar")
assert layer(torch.randn(3, 16)).output.shape == (3, 16)
model = mofme.create_model("restorer_small", pretrained=True)
assert model(torch.rand(1, 3, 32, 32)).image.shape == (1, 3, 32, 32)
from mofme.cli import main
sys.exit(main(["train", "demo_cpu"]))
"""
RESTORATION_EXTRAS = [
    "torchvision",
    "PIL",
    "yaml",
    "pydantic",
    "matplotlib",
    "skimage",
    "sklearn",
    "scipy",
    "tifffile",
    "tensorboard",
    "torchmetrics",
]


def test_the_layer_library_works_without_the_restoration_extras():
    script = _WITHOUT_EXTRAS.format(extras=RESTORATION_EXTRAS)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]  # the layers ran; the CLI explains what is missing
    assert "pip install 'mofme[restoration]'" in result.stderr
