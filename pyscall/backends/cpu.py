"""CPU backend of the ragged-table kernels (contract: pyscall/backends/CONTRACT.md, the four functions below,
shared with the Triton backend; the vocabulary comes from pyscall.spec). Checks dtypes,
devices, contiguity and shapes, allocates outputs, and calls ``pyscall._C.cpu`` with raw pointers; the C++ side releases the GIL and runs
``torch.get_num_threads()`` OpenMP threads. With ``uniform_width`` W > 0 (the arena's, never a guess)
the kernels find row i at ``weight[i * W : (i + 1) * W]`` without reading offsets and widths."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _C
from ..checks import check as _check, check_shape as _check_shape
from ..spec import DTYPE_CODES as _DTYPE_CODES, OPTIMIZERS, POOL_MODES, VALUE_DTYPES as _VALUE_DTYPES

__all__ = ["lookup", "pooled", "flat_grad", "fused_update"]


def _table(weight, offsets, widths) -> int:
    """Checks a ragged table's tensors; returns the dtype code of its values."""
    _check("weight", weight, _VALUE_DTYPES, 1)
    _check("offsets", offsets, torch.int64, 1)
    _check("widths", widths, torch.int32, 1)
    _check_shape("widths", widths, offsets.shape)
    return _DTYPE_CODES[weight.dtype]


def _d_max(d_max) -> int:
    if isinstance(d_max, bool) or not isinstance(d_max, int) or d_max < 0:
        raise ValueError(f"d_max must be a non-negative int, got {d_max!r}")
    return d_max


def _optional(name: str, t, dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    """Address of an optional tensor (0 for None) after checking it."""
    if t is None:
        return 0
    _check(name, t, dtype, len(shape))
    _check_shape(name, t, shape)
    return t.data_ptr()


def lookup(weight: torch.Tensor, offsets: torch.Tensor, widths: torch.Tensor, ids: torch.Tensor,
           d_max: int, uniform_width: int = 0) -> torch.Tensor:
    """Padded lookup: [N, d_max], each row's width values followed by zeros."""
    code = _table(weight, offsets, widths)
    _check("ids", ids, torch.int64, 1)
    d_max = _d_max(d_max)
    out = torch.empty(ids.numel(), d_max, dtype=weight.dtype)
    _C.cpu.lookup(code, weight.data_ptr(), weight.numel(), offsets.data_ptr(), widths.data_ptr(),
                  offsets.numel(), d_max, uniform_width, ids.data_ptr(), ids.numel(), out.data_ptr(),
                  torch.get_num_threads())
    return out


def pooled(weight: torch.Tensor, offsets: torch.Tensor, widths: torch.Tensor, ids: torch.Tensor,
           bag_offsets: torch.Tensor, mode: str, per_sample_weights: torch.Tensor | None,
           d_max: int, uniform_width: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled lookup over bags ``ids[bag_offsets[b]:bag_offsets[b+1]]`` with mode "sum", "mean" or
    "max" over the logical (zero-padded) rows. Returns (out [B, d_max], argmax [B, d_max] int64 for
    "max" (position in ids of the first maximum, -1 for an empty bag) else None)."""
    code = _table(weight, offsets, widths)
    _check("ids", ids, torch.int64, 1)
    _check("bag_offsets", bag_offsets, torch.int64, 1)
    if bag_offsets.numel() < 1:
        raise ValueError("bag_offsets must have B + 1 >= 1 entries")
    if mode not in POOL_MODES:
        raise ValueError(f"mode must be one of 'sum', 'mean', 'max', got {mode!r}")
    if per_sample_weights is not None and mode != "sum":
        raise ValueError(f"per_sample_weights is only supported for mode='sum', got mode={mode!r}")
    psw = _optional("per_sample_weights", per_sample_weights, weight.dtype, (ids.numel(),))
    d_max = _d_max(d_max)
    bags = bag_offsets.numel() - 1
    out = torch.empty(bags, d_max, dtype=weight.dtype)
    argmax = torch.empty(bags, d_max, dtype=torch.int64) if mode == "max" else None
    _C.cpu.pooled(code, weight.data_ptr(), weight.numel(), offsets.data_ptr(), widths.data_ptr(),
                  offsets.numel(), d_max, uniform_width, ids.data_ptr(), ids.numel(), bag_offsets.data_ptr(),
                  bags, POOL_MODES[mode], psw, out.data_ptr(),
                  0 if argmax is None else argmax.data_ptr(), torch.get_num_threads())
    return out, argmax


def _grad_source(grad_src, ids, src_index, scale, argmax, dtype=None) -> tuple:
    """Checks the per-position gradient inputs; returns the leading arguments of _C's flat_grad and
    fused_update: (dtype code, grad_src, m, ids, n, src_index, scale, argmax) as addresses and sizes."""
    _check("grad_src", grad_src, dtype or _VALUE_DTYPES, 2)
    _check("ids", ids, torch.int64, 1)
    n = ids.numel()
    if src_index is None and grad_src.shape[0] != n:
        raise ValueError(f"grad_src must have N = {n} rows when src_index is None, "
                         f"got shape {tuple(grad_src.shape)}")
    return (_DTYPE_CODES[grad_src.dtype], grad_src.data_ptr(), grad_src.shape[0], ids.data_ptr(), n,
            _optional("src_index", src_index, torch.int64, (n,)),
            _optional("scale", scale, grad_src.dtype, (n,)),
            _optional("argmax", argmax, torch.int64, tuple(grad_src.shape)))


def flat_grad(grad_src: torch.Tensor, ids: torch.Tensor, src_index: torch.Tensor | None,
              scale: torch.Tensor | None, argmax: torch.Tensor | None, offsets: torch.Tensor,
              widths: torch.Tensor, capacity: int, uniform_width: int = 0) -> torch.Tensor:
    """Gradient w.r.t. the flat buffer, shape [capacity]: zeros except the first width entries of
    touched rows, duplicate ids summed in position order."""
    src = _grad_source(grad_src, ids, src_index, scale, argmax)
    _check("offsets", offsets, torch.int64, 1)
    _check("widths", widths, torch.int32, 1)
    _check_shape("widths", widths, offsets.shape)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
        raise ValueError(f"capacity must be a non-negative int, got {capacity!r}")
    out = torch.empty(capacity, dtype=grad_src.dtype)
    _C.cpu.flat_grad(*src, offsets.data_ptr(), widths.data_ptr(), offsets.numel(), grad_src.shape[1],
                     uniform_width, out.data_ptr(), capacity, torch.get_num_threads())
    return out


def fused_update(grad_src: torch.Tensor, ids: torch.Tensor, src_index: torch.Tensor | None,
                 scale: torch.Tensor | None, argmax: torch.Tensor | None, offsets: torch.Tensor,
                 widths: torch.Tensor, weight: torch.Tensor,
                 state: Sequence[torch.Tensor] | None, row_state: torch.Tensor | None,
                 optimizer: str, lr: float, eps: float, beta1: float, beta2: float,
                 weight_decay: float, step: int, uniform_width: int = 0) -> None:
    """Combines the per-row gradients as flat_grad does and applies the optimizer in place to the
    touched rows of weight and of its state ("adagrad": [sum], "adam": [m, v], same layout as
    weight; "rowwise_adagrad": row_state float32 [num_rows])."""
    _table(weight, offsets, widths)
    src = _grad_source(grad_src, ids, src_index, scale, argmax, weight.dtype)
    spec = OPTIMIZERS.get(optimizer)
    if spec is None:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    state = state or ()
    if len(state) != spec.state_per_element:
        raise ValueError(f"optimizer {optimizer!r} needs {spec.state_per_element} state "
                         f"tensors, got {len(state)}")
    pointers = [0, 0]
    for idx, s in enumerate(state):
        _check(f"state[{idx}]", s, weight.dtype, 1)
        _check_shape(f"state[{idx}]", s, weight.shape)
        pointers[idx] = s.data_ptr()
    row_pointer = 0
    if spec.state_per_row:
        if row_state is None:
            raise ValueError("optimizer 'rowwise_adagrad' needs row_state (float32 [num_rows])")
        _check("row_state", row_state, torch.float32, 1)
        _check_shape("row_state", row_state, offsets.shape)
        row_pointer = row_state.data_ptr()
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an int >= 1, got {step!r}")
    # Positional: keyword arguments cost pybind11 a noticeable part of a small step.
    _C.cpu.fused_update(*src, offsets.data_ptr(), widths.data_ptr(), offsets.numel(), grad_src.shape[1],
                        uniform_width, weight.data_ptr(), weight.numel(), pointers[0], pointers[1], row_pointer,
                        spec.code, float(lr), float(eps), float(beta1), float(beta2),
                        float(weight_decay), step, torch.get_num_threads())

