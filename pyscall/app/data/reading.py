"""Shared pieces of the loaders: opening (gzip-aware), reading in chunks, key factorisation."""
from __future__ import annotations

import gzip
import io
from itertools import islice
from pathlib import Path

import numpy as np

CHUNK_LINES = 1 << 18  # bounds the memory of one parsing step (a few tens of MB of text)


def open_text(path):
    """Open a text file for reading, transparently gunzipping ``*.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def chunks(lines):
    """Yield lists of at most ``CHUNK_LINES`` items from an iterator."""
    it = iter(lines)
    while chunk := list(islice(it, CHUNK_LINES)):
        yield chunk


class KeyIndex:
    """Gives each distinct string key a code 0, 1, ... in order of first sight.

    Only the distinct keys are held in memory, the per-row codes go to compact int64 arrays.
    """

    def __init__(self):
        self._code: dict[str, int] = {}

    def codes(self, keys) -> np.ndarray:
        code = self._code
        # ``len(code)`` is evaluated before the insertion, so a new key gets the next code.
        return np.fromiter((code.setdefault(k, len(code)) for k in keys), dtype=np.int64)

    def keys(self) -> np.ndarray:
        return np.array(list(self._code), dtype=str)

    def __len__(self) -> int:
        return len(self._code)


def concat(parts, dtype=np.int64) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype=dtype)
