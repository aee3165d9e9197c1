"""Deprecated import paths, checked in a fresh interpreter (an earlier import in the test process
would have already warned and been cached)."""

import subprocess
import sys


def deprecation_message(old_import: str, check: str) -> str:
    """Run ``old_import`` with DeprecationWarning raised and return its message; then run it again with
    warnings ignored, followed by ``check`` (asserts that the old name is the new object)."""
    script = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        f"try:\n    {old_import}\nexcept DeprecationWarning as w:\n    print(w)\n"
        f"warnings.simplefilter('ignore')\n{old_import}\n{check}"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
