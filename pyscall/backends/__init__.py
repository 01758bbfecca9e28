"""Kernel backends side by side, each exposing the contract of CONTRACT.md (lookup, pooled, flat_grad,
fused_update): `cpu` (C++, pyscall._C.cpu) and `triton` (GPU, or CPU under TRITON_INTERPRET=1). `reference`
is the contract in float64 torch, what tests and bench/device_check.py compare both with."""
from __future__ import annotations

import os

from torch import Tensor

from . import cpu

# Read once, at import: like TRITON_INTERPRET, which Triton reads at import, a setting of the process
# (os.environ.get costs about 1 us, and for_tensor runs twice a training step).
_CHOICE = os.environ.get("PYSCALL_BACKEND", "auto")
_CPU_KERNELS_FOR_CPU = _CHOICE in ("auto", "cpu")


def for_tensor(t: Tensor):
    """The backend module for tensors on the device of `t` (PYSCALL_BACKEND=triton: Triton for CPU tensors too)."""
    if _CPU_KERNELS_FOR_CPU and t.is_cpu:
        return cpu  # the common case first, without building a torch.device
    device = t.device
    if _CHOICE not in ("auto", "cpu", "triton"):
        raise ValueError(f"PYSCALL_BACKEND must be 'auto', 'cpu' or 'triton', got {_CHOICE!r}")
    if device.type == "cuda" or _CHOICE == "triton":
        if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError("PYSCALL_BACKEND=triton on CPU tensors needs TRITON_INTERPRET=1 "
                               "set before pyscall.backends.triton is imported")
        from . import triton
        return triton
    raise ValueError(f"pyscall supports cpu and cuda tensors, got device {device}")
