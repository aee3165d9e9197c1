"""The README's API example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs():
    pytest.importorskip("timm")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README shows no Python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    assert namespace["out"].output.shape == (2, 900, 384)
    assert namespace["loss"].ndim == 0 and namespace["loss"].requires_grad
    assert sum(p.numel() for p in namespace["model"].parameters()) > 0


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    commands = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1)
    assert "mofme demo" in commands and "pytest" in commands
    ci = (README.parent / ".ci" / "run").read_text()
    test_command = next(line for line in commands.splitlines() if "pytest" in line).split("#")[0].strip()
    assert test_command in ci
