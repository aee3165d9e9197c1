"""Package layout rules that a refactor could silently break."""

import graphlib
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import mofme
from tests.deprecation import deprecation_message

PACKAGE = Path(mofme.__file__).parent
LIBRARY = ("nn", "models", "data")  # the library: never imports the jobs or the applications
JOBS = ("train", "evaluate", "infer")  # the jobs: never import the applications
ABOVE = {"nn": set(), "models": {"nn"}, "data": {"nn", "models"}, "infer": {"nn", "models", "data"}}
SUBPACKAGES = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
_IMPORT = re.compile(r"^\s*(?:from|import)\s+(?:mofme\.|\.\.)(\w+)", re.MULTILINE)


def _imported_parts(part: str) -> set[str]:
    """The top-level parts of mofme that the modules of ``mofme/<part>`` import (absolute or ``..``),
    deprecated stubs left out."""
    found = set()
    for path in (PACKAGE / part).rglob("*.py"):
        text = path.read_text()
        if "alias_module(" not in text:  # a deprecated stub pointing at a module's new home: not a dependency
            found |= set(_IMPORT.findall(text))
    return found - {part}


def test_library_and_jobs_never_import_the_applications_or_the_studies():
    for part in (*LIBRARY, *JOBS):
        assert not _imported_parts(part) & {"apps", "benchmarks", "cli", "studies"}, part
    assert not _imported_parts("apps") & {"studies"}  # the demo and the web page need no research code


def test_each_layer_imports_only_the_layers_below_it():
    """nn <- models <- data <- infer: an arrow against the flow would be an import cycle in waiting."""
    for part, allowed in ABOVE.items():
        assert _imported_parts(part) & SUBPACKAGES <= allowed, part
    assert not _imported_parts("evaluate") & {"train"}


def test_no_import_cycle_between_the_parts_of_mofme():
    parts = SUBPACKAGES - {"engine"}  # engine: deprecated aliases
    graph = {part: _imported_parts(part) & parts for part in parts}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_old_engine_paths_still_import_with_a_warning():
    message = deprecation_message(
        "import mofme.engine.restore",
        "import mofme.engine.restore as old, mofme.infer.restore as new\n"
        "from mofme.engine.config import load_config\n"
        "assert old is new and load_config.__module__ == 'mofme.train.config'",
    )
    assert "mofme.engine.restore moved to mofme.infer.restore" in message


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
