"""Checks of the tensors pyscall hands to C++ by address (dtype, device, rank, contiguity, shape): a wrong one
raises TypeError or ValueError naming it before any pointer is taken."""
from __future__ import annotations

import torch


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
