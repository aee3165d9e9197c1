"""Writes that a crash cannot tear: a failure mid-write leaves the previous file or folder whole."""

import pytest
import torch

import mofme.models.hub
from mofme.atomic import staged_directory
from mofme.engine.checkpoint import latest_checkpoint, save_checkpoint
from mofme.models import build_restorer


def _contents(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _crash(*args, **kwargs):
    raise RuntimeError("killed mid-write")


def test_a_crash_while_staging_leaves_the_previous_folder_whole(tmp_path, monkeypatch):
    best = tmp_path / "best"
    with staged_directory(best) as stage:
        build_restorer(preset="tiny", ffn="dense").save_pretrained(stage)
        (stage / "metrics.json").write_text("{}")
    before = _contents(best)
    monkeypatch.setattr(mofme.models.hub, "save_file", _crash)
    with pytest.raises(RuntimeError, match="killed"), staged_directory(best) as stage:
        build_restorer(preset="tiny", ffn="mofme", num_experts=4).save_pretrained(stage)
    assert _contents(best) == before
    assert [p.name for p in tmp_path.iterdir()] == ["best"]  # no temporary folder left behind


def test_staging_replaces_every_file_of_the_folder(tmp_path):
    folder = tmp_path / "out"
    with staged_directory(folder) as stage:
        (stage / "old.txt").write_text("old")
    with staged_directory(folder) as stage:
        (stage / "new.txt").write_text("new")
    assert _contents(folder) == {"new.txt": b"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_save_pretrained_in_place_never_pairs_a_new_config_with_old_weights(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    build_restorer(preset="tiny", ffn="dense").save_pretrained(folder)
    (folder / "notes.md").write_text("kept")
    before = _contents(folder)
    monkeypatch.setattr(mofme.models.hub, "save_file", _crash)
    with pytest.raises(RuntimeError, match="killed"):
        build_restorer(preset="tiny", ffn="mofme", num_experts=4).save_pretrained(folder)
    assert _contents(folder) == before


def test_a_failed_rewrite_of_a_checkpoint_keeps_the_one_latest_names(tmp_path, monkeypatch):
    model = build_restorer(preset="tiny", ffn="dense")
    directory = tmp_path / "checkpoints"
    save_checkpoint(directory, step=6, model=model, state={"step": 6})
    monkeypatch.setattr(torch, "save", _crash)
    with pytest.raises(RuntimeError, match="killed"):
        save_checkpoint(directory, step=6, model=model, state={"step": 6})
    assert latest_checkpoint(directory).name == "step-00000006"  # still there, and complete
