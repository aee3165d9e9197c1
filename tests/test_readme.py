"""The README's API example runs as written, and the README stays a short map whose links resolve."""

import argparse
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = README.parent / "docs"
_CODE_BLOCK = re.compile(r"```.*?```", flags=re.S)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


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


def _choices(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(found[0]) if found else {}


def _sub_commands() -> dict[str, set[str]]:
    """mofme's sub-commands -> their own sub-commands (``bench`` -> ``layers``, ...; most have none)."""
    from mofme.cli import build_parser

    return {name: set(_choices(parser)) for name, parser in _choices(build_parser()).items()}


def test_readme_is_a_short_map_of_mofme_commands():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines: move the detail to docs/"
    assert not [line for line in lines if "python -m mofme" in line], "show mofme sub-commands, not modules"
    # every program shown after the set-up block is a mofme sub-command the command line knows
    known = _sub_commands()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)[1:]
    shown = [line.split()[:3] for block in blocks for line in block.splitlines() if line.strip()]
    shown += [span.split()[:3] for span in re.findall(r"`(mofme [^`]+)`", _CODE_BLOCK.sub("", text))]
    assert shown and all(words[0] == "mofme" for words in shown), shown
    assert {words[1] for words in shown if len(words) > 1} <= set(known) | {"<command>"}
    # a command with sub-commands of its own is shown with one of them (`mofme bench layers`)
    nested = [words for words in shown if len(words) > 2 and known.get(words[1])]
    assert nested and all(words[2] in known[words[1]] or words[2].startswith("<") for words in nested)


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", _CODE_BLOCK.sub("", page.read_text()))  # code shows no links
    targets = (target.split("#")[0] for target in _LINK.findall(text))
    return [target for target in targets if target and not re.match(r"[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize(
    "page", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda p: str(p.relative_to(README.parent))
)
def test_relative_links_point_to_existing_files(page):
    missing = [target for target in _relative_links(page) if not (page.parent / target).exists()]
    assert not missing, f"{page.relative_to(README.parent)} links to missing files: {missing}"
