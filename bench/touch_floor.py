"""The read floor of a batch: how long one pass takes that only reads every cache line the batch's rows
span (touch_floor.cpp), on the same tables, in the same run as the kernels it bounds. Built with the
machine's C++ compiler on first use; benchmarks skip their floor rows where that fails."""
from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import tempfile
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("touch_floor.cpp")
DISTANCES = (16, 32, 64)  # prefetch distances tried; the floor is the fastest


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL:
    """The compiled touch_floor.cpp. Raises RuntimeError with the compiler's message if it fails."""
    with tempfile.TemporaryDirectory(prefix="pyscall_touch_floor_") as tmp:
        out = Path(tmp) / "touch_floor.so"
        cmd = [os.environ.get("CXX", "c++"), "-O2", "-march=native", "-fopenmp", "-shared", "-fPIC",
               str(SOURCE), "-o", str(out)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise RuntimeError(f"cannot build {SOURCE.name}: {getattr(e, 'stderr', '') or e}") from e
        lib = ctypes.CDLL(str(out))  # stays mapped once its file is gone: nothing left in the temp dir
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.touch_rows.argtypes = [p, i64, p, p, i64, i64, p, p, ctypes.c_int32, i64, ctypes.c_int32, p]
    lib.touch_rows.restype = i64
    return lib


class Touch:
    """touch(ids) reads every cache line that the rows of `ids` span in each buffer: `per_row` buffers
    (a table's weight or state, row i at offsets[i], width widths[i], or i * uniform_width when that is
    > 0) and `per_position` ones (position k's row at k * d_max, such as an output gradient; the first
    width values of it). Returns the number of lines read."""

    def __init__(self, offsets: torch.Tensor, widths: torch.Tensor, uniform_width: int, d_max: int,
                 per_row: list[torch.Tensor], per_position: list[torch.Tensor] = (),
                 threads: int = 1, distance: int = 32):
        buffers = [*per_row, *per_position]
        for b in buffers:
            if b.dtype != torch.float32 or not b.is_contiguous() or b.device.type != "cpu":
                raise ValueError("touch_floor reads contiguous float32 CPU buffers")
        self._keep = (offsets, widths, buffers)  # the addresses below stay valid
        self._args = (offsets.data_ptr(), widths.data_ptr(), uniform_width, d_max,
                      (ctypes.c_void_p * len(buffers))(*[b.data_ptr() for b in buffers]),
                      (ctypes.c_int64 * len(buffers))(*([0] * len(per_row) + [d_max] * len(per_position))),
                      len(buffers), distance, threads)
        self._sum = ctypes.c_float()
        self._lib = library()

    def __call__(self, ids: torch.Tensor) -> int:
        """ids: int64, contiguous, each in range (as the benchmark's batches are; not checked further)."""
        if ids.dtype != torch.int64 or not ids.is_contiguous():
            raise ValueError("ids must be a contiguous int64 tensor")
        return self._lib.touch_rows(ids.data_ptr(), ids.numel(), *self._args, ctypes.byref(self._sum))
