"""Writes that a crash cannot tear: files and folders are filled under a temporary name beside
their destination and renamed into place (a rename within one file system is atomic), so a reader
sees the old version or the new one, never half of one."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file", "staged_directory", "write_text_atomic"]


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; it replaces ``path`` when the block succeeds and
    is removed when it fails (``path`` then keeps its old content)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """``path.write_text(text)``, atomically, flushed to disk before the rename."""
    with atomic_file(path) as tmp, tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def staged_directory(final: str | Path) -> Iterator[Path]:
    """An empty temporary folder beside ``final`` to fill; when the block succeeds it takes the place
    of ``final`` (any previous ``final`` is moved aside by rename, then deleted), when it fails it is
    removed and ``final`` is left as it was. ``final`` is never seen half-written."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    retired = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
    if final.exists():
        os.replace(final, retired)
    os.replace(stage, final)
    shutil.rmtree(retired, ignore_errors=True)
