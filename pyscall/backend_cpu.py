"""CPU backend of the ragged-table kernels (contract: the four kernel functions below, shared with the
Triton backend; advance_step and bag_end are helpers of pyscall.ops for host tensors). Checks dtypes,
devices, contiguity and shapes, allocates outputs, and calls ``pyscall._C.cpu`` with raw pointers; the C++ side releases the GIL and runs
``torch.get_num_threads()`` OpenMP threads. With ``uniform_width`` W > 0 (the arena's, never a guess)
the kernels find row i at ``weight[i * W : (i + 1) * W]`` without reading offsets and widths."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _C

__all__ = ["lookup", "pooled", "flat_grad", "fused_update", "advance_step", "bag_end"]

_DTYPE_CODES = {torch.float32: 0, torch.float64: 1}
_VALUE_DTYPES = tuple(_DTYPE_CODES)
_POOL_MODES = {"sum": 0, "mean": 1, "max": 2}
_OPTIMIZERS = {"sgd": 0, "adagrad": 1, "rowwise_adagrad": 2, "adam": 3}
_STATE_COUNTS = {"sgd": 0, "adagrad": 1, "rowwise_adagrad": 0, "adam": 2}


def _check(name: str, t, dtype: torch.dtype | tuple[torch.dtype, ...], ndim: int) -> torch.Tensor:
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


def _check_shape(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if t.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


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
    if mode not in _POOL_MODES:
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
                  bags, _POOL_MODES[mode], psw, out.data_ptr(),
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
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {optimizer!r}")
    state = state or ()
    if len(state) != _STATE_COUNTS[optimizer]:
        raise ValueError(f"optimizer {optimizer!r} needs {_STATE_COUNTS[optimizer]} state "
                         f"tensors, got {len(state)}")
    pointers = [0, 0]
    for idx, s in enumerate(state):
        _check(f"state[{idx}]", s, weight.dtype, 1)
        _check_shape(f"state[{idx}]", s, weight.shape)
        pointers[idx] = s.data_ptr()
    row_pointer = 0
    if optimizer == "rowwise_adagrad":
        if row_state is None:
            raise ValueError("optimizer 'rowwise_adagrad' needs row_state (float32 [num_rows])")
        _check("row_state", row_state, torch.float32, 1)
        _check_shape("row_state", row_state, offsets.shape)
        row_pointer = row_state.data_ptr()
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be an int >= 1, got {step!r}")
    # Positional: keyword arguments cost pybind11 about 3 us here, a tenth of a small step.
    _C.cpu.fused_update(*src, offsets.data_ptr(), widths.data_ptr(), offsets.numel(), grad_src.shape[1],
                        uniform_width, weight.data_ptr(), weight.numel(), pointers[0], pointers[1], row_pointer,
                        _OPTIMIZERS[optimizer], float(lr), float(eps), float(beta1), float(beta2),
                        float(weight_decay), step, torch.get_num_threads())


def advance_step(hparams: torch.Tensor, step: torch.Tensor) -> tuple:
    """Adds 1 to a table's step count (int64 [1]) in place; returns (lr, eps, beta1, beta2, weight_decay)
    from its hyper-parameters (float64 [5]) and the new count. Not a kernel: pyscall.ops calls it for
    host tensors whatever the backend."""
    _check("hparams", hparams, torch.float64, 1)
    _check_shape("hparams", hparams, (5,))
    _check("step", step, torch.int64, 1)
    _check_shape("step", step, (1,))
    return _C.cpu.advance_step(hparams.data_ptr(), step.data_ptr())


def bag_end(bag_offsets: torch.Tensor, n: int) -> int:
    """Checks bag offsets (a 1-D int64 host tensor: starting at 0, non-decreasing, at most n) over n
    indices and returns the last one. Not a kernel: pyscall.ops checks every backend's bags with it."""
    if bag_offsets.dtype != torch.int64 or bag_offsets.dim() != 1:
        raise TypeError(f"bag offsets must be a 1-D int64 tensor, got {bag_offsets.dtype} with shape "
                        f"{tuple(bag_offsets.shape)}")
    o = bag_offsets.contiguous()
    return _C.cpu.bag_end(o.data_ptr(), o.numel(), n)
