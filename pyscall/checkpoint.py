"""Atomic checkpoints: a reader sees the previous complete file or the new complete file, never a torn one.

Write to a temporary file in the same folder, fsync it, rename it over the target (atomic on POSIX), then
fsync the folder so the rename itself survives a crash. A process killed in the middle of `save` leaves at
most a stray temporary file, and `load` still returns the previous checkpoint.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import torch

# Test hook: PYSCALL_TEST_CRASH_IN_SAVE=n makes the n-th `save` of the process write half of its temporary
# file and kill the process (a crash in the middle of a save).
CRASH_IN_SAVE_ENV = "PYSCALL_TEST_CRASH_IN_SAVE"
_saves = 0


def save(state: dict, path) -> None:
    global _saves
    _saves += 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.environ.get(CRASH_IN_SAVE_ENV) == str(_saves):
                _write_half_and_die(state, f)
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path) -> Optional[dict]:
    """The checkpoint at `path`, or None when there is none yet."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _write_half_and_die(state: dict, f) -> None:
    import io
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    os._exit(17)
