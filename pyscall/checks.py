"""Checks of what pyscall hands to C++: tensors passed by address (dtype, device, rank, contiguity, shape), integer
arrays of ids and widths, byte budgets and the memory a device can hold. A wrong value raises TypeError or
ValueError naming it before anything is taken from it."""
from __future__ import annotations

import os

import numpy as np
import torch

_INDEX_DTYPES = (torch.int32, torch.int64)
MAX_BYTES = 2**63 - 1


def check(name: str, t, dtype: torch.dtype | tuple[torch.dtype, ...], ndim: int) -> torch.Tensor:
    # Runs a dozen times a step: the passing case first, in one expression (t.is_cpu, not t.device,
    # which builds a device object).
    if isinstance(t, torch.Tensor) and (t.dtype in dtype if isinstance(dtype, tuple) else t.dtype == dtype) \
            and t.is_cpu and t.dim() == ndim and t.is_contiguous():
        return t
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if t.dtype not in dtypes:
        expected = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} must have dtype {expected}, got {t.dtype}")
    if not t.is_cpu:
        raise ValueError(f"{name} must be on device cpu, got {t.device}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    raise ValueError(f"{name} must be contiguous")


def check_shape(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if t.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def _meminfo_bytes(*fields: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            values = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)}
        return sum(values[k] for k in fields)
    except (OSError, ValueError, KeyError):
        return None


def memory_ceiling(device: torch.device) -> int:
    """Bytes no table on `device` can hold: a CUDA device's memory, or the host's RAM and swap
    (-1 when unknown). A request above it is refused before anything is allocated."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.get_device_properties(device).total_memory)
        except Exception:  # noqa: BLE001 - no driver or no such device: no ceiling
            return -1
    if device.type == "cpu":
        total = _meminfo_bytes("MemTotal", "SwapTotal")
        if total is None:
            try:
                total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (AttributeError, ValueError, OSError):
                return -1
        return int(total)
    return -1


def check_budget_bytes(budget_bytes) -> int | None:
    """budget_bytes as an int (None: unbounded); a clear error for anything that is not an int in [0, 2**63)."""
    if budget_bytes is None:
        return None
    if isinstance(budget_bytes, (bool, np.bool_)) or not isinstance(budget_bytes, (int, np.integer)):
        raise TypeError(f"budget_bytes must be None or an int, got {type(budget_bytes).__name__} {budget_bytes!r}")
    if not 0 <= budget_bytes <= MAX_BYTES:
        raise ValueError(f"budget_bytes must be None or an int in [0, 2**63), got {budget_bytes!r}")
    return int(budget_bytes)


def check_int_dtype(x, what: str) -> None:
    """TypeError unless the tensor or array `x` holds integers int_array takes (not bools or floats)."""
    if isinstance(x, torch.Tensor):
        if x.dtype not in _INDEX_DTYPES:
            raise TypeError(f"{what} must be an int32 or int64 tensor, got {x.dtype}")
    elif x.size and (x.dtype.kind not in "iu" or x.dtype == np.uint64):  # (numpy makes [] float64)
        raise TypeError(f"{what} must be integers (int32 or int64), got dtype {x.dtype}")


def int_array(x, what: str) -> np.ndarray:
    """A 1-D int32/int64 numpy view of ``x`` (tensor, ndarray, int or list); never from floats."""
    if isinstance(x, torch.Tensor):
        check_int_dtype(x, what)
        if x.device.type != "cpu":
            raise ValueError(f"{what} must be on the cpu (layout runs on the host), got {x.device}")
        return x.reshape(-1).contiguous().numpy()
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{what} must be integers, got bool")
    if isinstance(x, (int, np.integer)):
        return np.array([x], dtype=np.int64)
    arr = np.asarray(x)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu" or arr.dtype == np.uint64:
        raise TypeError(f"{what} must be integers (int32 or int64), got dtype {arr.dtype}")
    if arr.dtype not in (np.int32, np.int64):
        arr = arr.astype(np.int64)
    return np.ascontiguousarray(arr.reshape(-1))


def check_float_dtype(dtype, what: str) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{what} must be a floating torch.dtype, got {dtype!r}")
    return dtype
