"""Writes that a crash cannot tear: files and folders are filled under a temporary name beside
their destination and renamed into place (a rename within one file system is atomic), so a reader
sees the old version or the new one, never half of one.

A folder that already exists cannot be replaced by one rename. On Linux (3.15 and later, on the
file systems that support it) the new folder and the old one swap names in one atomic
``renameat2(RENAME_EXCHANGE)``; elsewhere the old folder is first renamed aside (``.<name>.<id>.old``)
and the new one renamed into place. A kill between those two renames leaves no folder under the
name, only the retired copy: :func:`recover_directory` (run before every swap and by the loaders,
:func:`mofme.models.load_model` and the trainer's resume) renames it back. Either way, a kill at any
moment leaves the old folder or the new one. Files and folders get the permissions the umask gives,
as ``open`` and ``mkdir`` would."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

__all__ = ["atomic_file", "recover_directory", "staged_directory", "write_text_atomic"]

_AT_FDCWD = -100  # renameat2's "relative to the working directory"
_RENAME_EXCHANGE = 2  # renameat2 flag: swap the two names atomically
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP)  # old kernel or a file system without it


def _umask() -> int:
    """The process's umask: from ``/proc/self/status`` on Linux (no change, so no race with other
    threads), else by setting it and setting it back."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; it replaces ``path`` when the block succeeds and
    is removed when it fails (``path`` then keeps its old content). The file gets the mode the umask
    gives a new file (``0o666 & ~umask``), not the temporary file's private 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
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
    of ``final`` (see the module docstring: atomically on Linux, else recoverably), when it fails it
    is removed and ``final`` is left as it was. ``final`` is never seen half-written, and a kill at
    any moment leaves the old ``final`` or the new one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(final)
    stage = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield stage
        os.chmod(stage, 0o777 & ~_umask())
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _swap_in(stage, final)


def _swap_in(stage: Path, final: Path) -> None:
    """Put the folder ``stage`` in the place of ``final`` and delete the old ``final``."""
    if not final.exists():
        os.replace(stage, final)
    elif _exchange(stage, final):
        shutil.rmtree(stage, ignore_errors=True)  # it holds the old folder now
    else:
        os.replace(final, final.with_name(f".{final.name}.{uuid.uuid4().hex}.old"))  # a kill from here
        os.replace(stage, final)  # ... to here leaves only the retired copy: recover_directory
    for retired in _retired_copies(final):  # this one, and any an earlier kill left behind
        shutil.rmtree(retired, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap the names of two existing paths in one atomic step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``); False where the system or the file system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    names = (os.fsencode(first), os.fsencode(second))
    if renameat2(_AT_FDCWD, names[0], _AT_FDCWD, names[1], _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


@functools.cache
def _renameat2() -> Any:
    """The C library's ``renameat2`` (Linux, glibc 2.28 or later), or None."""
    if not sys.platform.startswith("linux"):
        return None
    return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)


def recover_directory(final: str | Path) -> bool:
    """Undo a swap of :func:`staged_directory` killed between its two renames: when ``final`` is
    missing and a retired copy ``.<name>.<id>.old`` lies beside it, rename the newest such copy back
    to ``final``. Whether it did."""
    final = Path(final)
    if final.exists() or not final.parent.is_dir():
        return False
    retired = _retired_copies(final)
    if not retired:
        return False
    os.replace(max(retired, key=lambda p: p.stat().st_mtime), final)
    return True


def _retired_copies(final: Path) -> list[Path]:
    """The folders ``.<name>.<id>.old`` beside ``final``: earlier versions renamed aside."""
    name = re.compile(rf"\.{re.escape(final.name)}\.[0-9a-f]{{32}}\.old")
    return [p for p in final.parent.iterdir() if name.fullmatch(p.name) and p.is_dir()]
