"""Host-side helpers of the ops, the same whatever backend runs the kernels: the check of a pooled lookup's bags
and the advance of a fused optimizer's step count. One C++ call each (pyscall._C.cpu)."""
from __future__ import annotations

import torch

from . import _C
from .checks import check, check_shape
from .errors import OffsetsError
from .spec import HPARAMS


def bag_end(bag_offsets: torch.Tensor, n: int) -> int:
    """Checks bags [B+1] over n indices (starting at 0, non-decreasing, at most n; else OffsetsError, a ValueError
    and a RuntimeError) and returns bag_offsets[-1], the number of indices the bags use. A CUDA tensor is copied to
    the host first."""
    if bag_offsets.dtype != torch.int64 or bag_offsets.dim() != 1:
        raise TypeError(f"bag offsets must be a 1-D int64 tensor, got {bag_offsets.dtype} with shape "
                        f"{tuple(bag_offsets.shape)}")
    o = bag_offsets.cpu().contiguous()
    try:
        return _C.cpu.bag_end(o.data_ptr(), o.numel(), n)
    except ValueError as e:  # the C++ check's ValueError, as an instance of torch's RuntimeError too
        raise OffsetsError(str(e)) from None


def advance_step(hparams: torch.Tensor, step: torch.Tensor) -> tuple:
    """Adds 1 to a table's step count (int64 [1], on the host) in place; returns its hyper-parameters (float64
    [5], in pyscall.spec.HPARAMS order) and the new count."""
    check("hparams", hparams, torch.float64, 1)
    check_shape("hparams", hparams, (len(HPARAMS),))
    check("step", step, torch.int64, 1)
    check_shape("step", step, (1,))
    return _C.cpu.advance_step(hparams.data_ptr(), step.data_ptr())


def optimizer_args(hparams: torch.Tensor, step: torch.Tensor, optimizer: str) -> dict:
    """The fused optimizer's keyword arguments after advancing the table's step count by one."""
    if step.is_cpu:  # one C++ call: three torch ops cost a few percent of a small step
        *values, count = advance_step(hparams, step)
    else:
        values = hparams.tolist()
        count = int(step) + 1
        step.fill_(count)
    return dict(zip(HPARAMS, values), optimizer=optimizer, step=count)
