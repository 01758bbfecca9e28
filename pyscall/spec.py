"""The kernel contract's vocabulary, in one place: optimizers, pooling modes and value dtypes. Every backend
(pyscall.backends.cpu, pyscall.backends.triton), the modules and the docs follow it; the C++ enums in
csrc/cpu/kernels.h must match its codes (tests/test_spec.py compares them)."""
from __future__ import annotations

from typing import NamedTuple

import torch


class Optimizer(NamedTuple):
    code: int               # csrc/cpu/kernels.h, enum class Optimizer
    state_per_element: int  # buffers laid out like the weight (Adagrad: sum; Adam: m, v)
    state_per_row: int      # float32 [num_rows] buffers (row-wise Adagrad: the mean squared gradient)
    lr: float               # defaults of the modules
    eps: float


OPTIMIZERS = {
    "sgd": Optimizer(0, 0, 0, lr=0.01, eps=0.0),
    "adagrad": Optimizer(1, 1, 0, lr=0.01, eps=1e-10),
    "rowwise_adagrad": Optimizer(2, 0, 1, lr=0.01, eps=1e-8),
    "adam": Optimizer(3, 2, 0, lr=1e-3, eps=1e-8),
}

# Order of a table's hyper-parameters (its float64 `_hparams` buffer and the kernels' arguments).
HPARAMS = ("lr", "eps", "beta1", "beta2", "weight_decay")

# Pooling modes of EmbeddingBag, by their code (csrc/cpu/kernels.h, enum class PoolMode).
POOL_MODES = {"sum": 0, "mean": 1, "max": 2}

# Value dtypes every backend looks up and updates (C++: float and double). The Triton backend also reads
# float16 and bfloat16 (lookups and drop-in gradients on a GPU), never with a fused optimizer.
VALUE_DTYPES = (torch.float32, torch.float64)
DTYPE_CODES = {torch.float32: 0, torch.float64: 1}  # csrc/cpu/bind_cpu.cpp dispatch
HALF_DTYPES = (torch.float16, torch.bfloat16)


def table_dtypes(device: torch.device, fused: bool) -> tuple:
    """Dtypes a table on `device` may hold: the half types only on a GPU and without a fused optimizer."""
    return VALUE_DTYPES + HALF_DTYPES if device.type == "cuda" and not fused else VALUE_DTYPES
