"""The command line's options are documented, and its errors name what is wrong."""

import argparse

import pytest

from mofme.cli import build_parser, main


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every sub-command, nested ones included (``bench layers``), by its words after ``mofme``."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found |= _subcommands(sub, prefix + name + " ")
    return found


@pytest.mark.parametrize("command", sorted(_subcommands(build_parser())))
def test_every_option_of_every_command_has_a_help_text(command):
    parser = _subcommands(build_parser())[command]
    undocumented = [
        action.option_strings[0] if action.option_strings else action.dest
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()
    ]
    assert not undocumented, f"mofme {command}: no help for {undocumented}"


def test_restore_of_a_folder_without_images_fails_naming_it(tmp_path, capsys):
    empty = tmp_path / "holiday photos"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    assert main(["restore", str(empty), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"mofme restore: error: no images to restore in {empty} (looked for .png")
    assert not (tmp_path / "out").exists()
