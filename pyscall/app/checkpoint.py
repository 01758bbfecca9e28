"""Atomic checkpoints: a reader sees the previous complete file or the new complete file, never a torn one.

Write to a temporary file in the same folder, fsync it, rename it over the target (atomic on POSIX), then
fsync the folder so the rename itself survives a crash. A process killed in the middle of `save` leaves at
most a stray temporary file, and `load` still returns the previous checkpoint. The writer holds an exclusive
flock on its temporary file while it writes, so the next `save` or `load` of that checkpoint can tell a
stray file (nobody holds its lock: its writer died) from one being written, and removes the stray ones.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import Optional

import torch

from ..errors import CheckpointError

def save(state: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stray_temporaries(path)
    fd, tmp = _locked_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # before the close: no other process may take it for a stray meanwhile
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _locked_temporary(path: Path) -> tuple[int, str]:
    """A new temporary file next to `path`, open and flocked (the lock goes when the file closes or this process
    dies). A cleaner that took it for a stray between its creation and the lock has unlinked it: then another."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        os.close(fd)


def load(path) -> Optional[dict]:
    """The checkpoint at `path`, or None when there is none yet. A file that cannot be read as a checkpoint
    (empty, truncated, corrupted, or holding more than tensors and plain values) raises CheckpointError,
    which names the file."""
    path = Path(path)
    remove_stray_temporaries(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises EOFError, OSError, RuntimeError, UnpicklingError...
        size = path.stat().st_size if path.is_file() else None
        what = "is empty" if size == 0 else f"({size} bytes) cannot be read as a checkpoint"
        raise CheckpointError(f"checkpoint {path} {what}: {type(e).__name__}: {e}") from e


def remove_stray_temporaries(path) -> list:
    """Removes the temporary files that a save of `path` killed midway left behind (the ones no live writer
    holds locked); returns their paths."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(path.name + ".*.tmp"):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue  # gone already (its writer renamed it, or another cleaner removed it)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tmp.unlink()  # holding the lock: a writer that locks it next sees it unlinked
            removed.append(tmp)
        except (BlockingIOError, FileNotFoundError):
            pass  # a live writer holds it, or it is gone already
        finally:
            os.close(fd)
    return removed

