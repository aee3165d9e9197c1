"""Writes that a crash cannot tear: a failure mid-write leaves the previous file or folder whole."""

import os
import shutil
import signal
import stat
import subprocess
import sys
import uuid

import pytest
import torch

import mofme.atomic
import mofme.models.hub
from mofme.atomic import atomic_file, recover_directory, staged_directory, write_text_atomic
from mofme.models import build_restorer, load_model
from mofme.train.checkpoint import latest_checkpoint, load_training_state, save_checkpoint


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


# ------------------------------------------------------------------- kill at any moment of the swap
KILLED_SWAP = """
import importlib.util, os, shutil, signal, sys
from pathlib import Path

final, source, kill_after, mode = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
spec = importlib.util.spec_from_file_location("atomic", sys.argv[5])  # stdlib only: no torch to import
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
steps = 0


def counted(step):
    def run(*args, **kwargs):
        global steps
        result = step(*args, **kwargs)
        steps += 1
        if steps == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return run


unsupported = lambda first, second: False  # noqa: E731  (as on macOS, or old kernels)
exchange = counted(atomic._exchange) if mode == "exchange" else unsupported
with atomic.staged_directory(final) as stage:
    shutil.copytree(source, stage, dirs_exist_ok=True)
    if kill_after == 0:  # filled, not yet swapped
        os.kill(os.getpid(), signal.SIGKILL)
    atomic.os.replace, atomic.shutil.rmtree = counted(os.replace), counted(shutil.rmtree)
    atomic._exchange = exchange
"""
# the step after which the child is killed -> the model best/ holds then (len: no kill)
SWAP_OUTCOMES = {
    "exchange": ["old", "new", "new", "new"],  # exchange, delete the old folder
    "two-renames": ["old", "old", "new", "new", "new"],  # retire old, promote new, delete old
}


def _exchange_supported(folder):
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    try:
        return mofme.atomic._exchange(folder / "a", folder / "b")
    finally:
        shutil.rmtree(folder / "a")
        shutil.rmtree(folder / "b")


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two saved tiny restorers told apart by their number of experts: old (4) and new (2)."""
    root = tmp_path_factory.mktemp("models")
    for name, experts in (("old", 4), ("new", 2)):
        build_restorer(preset="tiny", ffn="mofme", num_experts=experts, top_k=1).save_pretrained(root / name)
    return root


@pytest.mark.parametrize(
    ("mode", "kill_after"), [(m, k) for m, outcomes in SWAP_OUTCOMES.items() for k in range(len(outcomes))]
)
def test_a_kill_at_any_step_of_replacing_best_leaves_a_loadable_model(two_models, tmp_path, mode, kill_after):
    if mode == "exchange" and not _exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    best = tmp_path / "run" / "best"
    shutil.copytree(two_models / "old", best)
    child = [sys.executable, "-c", KILLED_SWAP, best, two_models / "new", str(kill_after), mode]
    done = subprocess.run([*map(str, child), mofme.atomic.__file__], capture_output=True, text=True)
    killed = kill_after < len(SWAP_OUTCOMES[mode]) - 1
    assert done.returncode == (-signal.SIGKILL if killed else 0), done.stderr
    expected = {"old": 4, "new": 2}[SWAP_OUTCOMES[mode][kill_after]]
    assert load_model(best).config.num_experts == expected  # never no best/ at all
    with staged_directory(best) as stage:  # the next replacement clears what the kill left retired
        shutil.copytree(two_models / "new", stage, dirs_exist_ok=True)
    assert not list(best.parent.glob("*.old"))


def test_a_checkpoint_whose_rewrite_was_killed_mid_swap_is_recovered(tmp_path):
    directory = tmp_path / "checkpoints"
    save_checkpoint(directory, step=6, model=build_restorer(preset="tiny", ffn="dense"), state={"step": 6})
    final = directory / "step-00000006"
    final.rename(directory / f".step-00000006.{uuid.uuid4().hex}.old")  # the state the kill left
    assert latest_checkpoint(directory) == final
    assert load_training_state(final, torch.device("cpu")) == {"step": 6}


def test_recovery_leaves_a_present_folder_and_unrelated_names_alone(tmp_path):
    (tmp_path / ".best.x.old").mkdir()  # not a retired copy's name
    (tmp_path / f".best2.{uuid.uuid4().hex}.old").mkdir()  # another folder's
    assert not recover_directory(tmp_path / "best")
    (tmp_path / "best").mkdir()
    (tmp_path / f".best.{uuid.uuid4().hex}.old").mkdir()
    assert not recover_directory(tmp_path / "best")


# --------------------------------------------------------------------------------- permissions
@pytest.mark.parametrize(
    ("umask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_files_and_folders_get_the_mode_the_umask_gives(tmp_path, umask, file_mode, folder_mode):
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "notes.txt", "x")
        with atomic_file(tmp_path / "image.png") as tmp:
            tmp.write_bytes(b"png")
        with staged_directory(tmp_path / "best") as stage:
            (stage / "metrics.json").write_text("{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "notes.txt").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "image.png").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "best").stat().st_mode) == folder_mode
