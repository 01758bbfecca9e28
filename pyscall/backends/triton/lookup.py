"""Padded lookup: ids -> [N, d_max], each row's first width values then zeros."""
import triton
import triton.language as tl

from . import _common
from ._common import check_ids, check_table, check_weight, num_warps, row_tile


@triton.jit
def _lookup_kernel(weight_ptr, offsets_ptr, widths_ptr, ids_ptr, out_ptr, n, num_rows, d_max,
                   BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    # One program: BLOCK_ROWS positions x BLOCK_D columns; int64 index math throughout.
    pos = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    d = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    pos_ok = pos < n
    row = tl.load(ids_ptr + pos, mask=pos_ok, other=0)
    row_ok = pos_ok & (row >= 0) & (row < num_rows)  # never read out of bounds, even for bad ids
    off = tl.load(offsets_ptr + row, mask=row_ok, other=0)
    width = tl.load(widths_ptr + row, mask=row_ok, other=0)
    read = (d[None, :] < width[:, None]) & (d[None, :] < d_max)
    vals = tl.load(weight_ptr + off[:, None] + d[None, :], mask=read, other=0.0)
    tl.store(out_ptr + pos[:, None] * d_max + d[None, :], vals, mask=pos_ok[:, None] & (d[None, :] < d_max))


def tile(d_max):
    """(BLOCK_ROWS, BLOCK_D): the lookup's speed barely depends on it (bench/gpu_tile_sweep.py)."""
    return row_tile(d_max, 4096, 256)


def lookup(weight, offsets, widths, ids, d_max, uniform_width=0):
    # uniform_width (pyscall/backends/CONTRACT.md): the metadata stays valid, and these kernels read it regardless.
    device = check_weight(weight)
    num_rows = check_table(offsets, widths, device, d_max)
    n = check_ids(ids, device, num_rows)
    out = _common.empty((n, d_max), weight.dtype, device)
    if n == 0 or d_max == 0:
        return out
    block_rows, block_d = tile(d_max)
    grid = (triton.cdiv(n, block_rows), triton.cdiv(d_max, block_d))
    _lookup_kernel[grid](weight, offsets, widths, ids, out, n, num_rows, d_max,
                         BLOCK_ROWS=block_rows, BLOCK_D=block_d, num_warps=num_warps(block_rows, block_d))
    return out
