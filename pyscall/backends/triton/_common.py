"""Argument checks and tile sizes shared by the Triton ops (no kernels here)."""
import torch
import triton
import triton.language as tl

from ...spec import HALF_DTYPES, VALUE_DTYPES

# Element types the kernels read (the half types too); the optimizer paths accept only pyscall.spec's.
FLOAT_DTYPES = VALUE_DTYPES + HALF_DTYPES
UPDATE_DTYPES = VALUE_DTYPES


def acc_dtype(dtype):
    """Accumulator for a weight dtype: float64 stays float64, everything else sums in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def check_tensor(name, t, *, dtypes, device, ndim, numel=None, shape=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        expected = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} must have dtype {expected}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name} must be on {device} (the weight's device), got {t.device}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if numel is not None and t.numel() != numel:
        raise ValueError(f"{name} must have {numel} elements, got {t.numel()}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def check_table(offsets, widths, device, d_max):
    """Checks the row metadata; returns num_rows."""
    if not isinstance(d_max, int) or isinstance(d_max, bool) or d_max < 0:
        raise ValueError(f"d_max must be a non-negative int, got {d_max!r}")
    check_tensor("offsets", offsets, dtypes=(torch.int64,), device=device, ndim=1)
    check_tensor("widths", widths, dtypes=(torch.int32,), device=device, ndim=1, numel=offsets.numel())
    return offsets.numel()


def check_ids(ids, device, num_rows=None):
    """Checks the ids tensor and, given num_rows, that every id lies in [0, num_rows) (IndexError as in
    torch). Forward ops pass num_rows; backward ops take the ids their forward checked."""
    check_tensor("ids", ids, dtypes=(torch.int64,), device=device, ndim=1)
    if num_rows is not None and ids.numel():
        low, high = torch.stack(torch.aminmax(ids)).tolist()  # one device-to-host copy, not two
        if low < 0 or high >= num_rows:
            valid = f"valid ids are 0 to {num_rows - 1}" if num_rows else "the table has no rows"
            raise IndexError(f"index out of range in self: id {low if low < 0 else high}, {valid}")
    return ids.numel()


def row_tile(d_max, elements, max_block_d):
    """(BLOCK_ROWS, BLOCK_D): rows packed per program so that narrow tables keep each program busy."""
    block_d = min(triton.next_power_of_2(max(d_max, 1)), max_block_d)
    return max(1, elements // block_d), block_d


def num_warps(block_rows, block_d):
    """About 1,024 elements of a tile per warp (32 per lane). Gathers of random rows hide their latency
    across many small programs better than inside a few large ones (tile sweep: bench/results/device_h200.md)."""
    return max(1, min(8, block_rows * block_d // 1024))


def check_weight(weight, dtypes=FLOAT_DTYPES, name="weight"):
    """The weight fixes the device every other argument must share."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(weight).__name__}")
    check_tensor(name, weight, dtypes=dtypes, device=weight.device, ndim=1)
    return weight.device


def empty(shape, dtype, device):
    """Every op allocates its outputs here, so tests can poison them (monkeypatch) before a call."""
    return torch.empty(shape, dtype=dtype, device=device)
