"""Training checkpoints that survive a crash at any moment.

Layout under ``<output_dir>/checkpoints``:

    step-00000120/config.json          the model (Hugging Face layout: `mofme restore` accepts it)
    step-00000120/model.safetensors
    step-00000120/training_state.pt    optimiser, scheduler, EMA, RNG, step (tensors and plain data)
    latest.json                        {"step": 120, "path": "step-00000120"}

A checkpoint is written into a temporary folder and renamed into place, and only then is
``latest.json`` replaced (also by rename): a crash mid-write leaves the previous one intact.
Training state is loaded with ``torch.load(weights_only=True)``, which refuses arbitrary pickles.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from mofme.atomic import recover_directory, staged_directory, write_text_atomic

__all__ = ["latest_checkpoint", "load_training_state", "save_checkpoint"]

STATE_FILE = "training_state.pt"
LATEST = "latest.json"


def save_checkpoint(
    directory: Path, *, step: int, model: torch.nn.Module, state: dict[str, Any], keep: int = 2
) -> Path:
    """Write ``model`` (``save_pretrained``) and ``state`` as checkpoint ``step``; keep the newest ``keep``."""
    name = f"step-{step:08d}"
    final = directory / name
    with staged_directory(final) as stage:
        model.save_pretrained(stage)
        torch.save(state, stage / STATE_FILE)
    write_text_atomic(directory / LATEST, json.dumps({"step": step, "path": name}))
    old = sorted(p for p in directory.glob("step-*") if p.is_dir() and p.name != name)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint that ``latest.json`` names, or None when there is none."""
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    path = directory / json.loads(pointer.read_text())["path"]
    recover_directory(path)  # a rewrite of it killed mid-swap (mofme.atomic)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {path}, which has no {STATE_FILE}")
    return path


def load_training_state(checkpoint: Path, device: torch.device) -> dict[str, Any]:
    return torch.load(checkpoint / STATE_FILE, map_location=device, weights_only=True)
