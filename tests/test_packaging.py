"""Package layout rules that a refactor could silently break."""

import importlib.metadata
import re
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
