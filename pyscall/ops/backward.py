"""The backward both lookups share: the gradient of the flat weight (dense, or sparse COO for sparse=True), the
fused optimizer update of the touched rows, and the gradient of per_sample_weights. Each is a custom op
(pyscall::flat_backward, ::fused_backward, ::per_sample_weights_grad) for compiled graphs and the same body
called directly in eager mode; `weight_grad`, `update` and `psw_grad` flatten the bundles into their arguments."""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from .. import backends, host
from .bags import bag_positions, gradient_rows as bag_gradient_rows
from .table import Fused, Table, current_layout


def _gradient_rows(ids, bag_offsets, mode, psw, padding_idx):
    """Kernel-contract arguments (ids, src_index, scale) for a padded or pooled backward."""
    if bag_offsets is not None:
        return bag_gradient_rows(ids, bag_offsets, mode, psw, padding_idx)
    if padding_idx >= 0:
        kept = (ids != padding_idx).nonzero().squeeze(1)
        return ids[kept], kept, None
    return ids, None, None


def _flat(weight: Tensor, grad: Tensor, ids: Tensor, bag_offsets: Optional[Tensor], offsets: Tensor, widths: Tensor,
          uniform_width: int, pool_mode: str, per_sample_weights: Optional[Tensor], argmax: Optional[Tensor],
          padding_idx: int) -> Tensor:
    ids_k, src_index, scale = _gradient_rows(ids, bag_offsets, pool_mode, per_sample_weights, padding_idx)
    if scale is not None:
        scale = scale.to(grad.dtype)
    return backends.for_tensor(weight).flat_grad(grad, ids_k, src_index, scale, argmax, offsets, widths,
                                                 weight.numel(), uniform_width)


def _sparse(weight: Tensor, grad: Tensor, ids: Tensor, bag_offsets: Optional[Tensor], offsets: Tensor,
            widths: Tensor, uniform_width: int, pool_mode: str, per_sample_weights: Optional[Tensor],
            argmax: Optional[Tensor], padding_idx: int) -> Tensor:
    """The gradient of the flat weight as an uncoalesced sparse COO tensor (sparse=True, eager only): one
    entry per touched element of each position's row, as torch's sparse embedding gradient has one row per
    position. Torch ops only, so it runs on any device."""
    ids_k, src_index, scale = _gradient_rows(ids, bag_offsets, pool_mode, per_sample_weights, padding_idx)
    rows = grad if src_index is None else grad[src_index]
    if scale is not None:
        rows = rows * scale.to(grad.dtype)[:, None]
    cols = torch.arange(grad.shape[1], device=grad.device)
    keep = cols[None, :] < widths[ids_k].to(torch.int64)[:, None]
    if argmax is not None:  # "max": a position takes the gradient of the columns where it was the maximum
        positions = torch.arange(ids_k.numel(), device=grad.device)
        keep &= argmax[src_index] == positions[:, None]
    index = (offsets[ids_k][:, None] + cols[None, :])[keep]
    return torch.sparse_coo_tensor(index[None, :], rows[keep], (weight.numel(),), is_coalesced=False,
                                   check_invariants=False)  # indices lie in the buffer by construction


def _fused(weight: Tensor, states: list[Tensor], row_states: list[Tensor], step: Tensor, hparams: Tensor,
           optimizer: str, grad: Tensor, ids: Tensor, bag_offsets: Optional[Tensor], offsets: Tensor, widths: Tensor,
           uniform_width: int, pool_mode: str, per_sample_weights: Optional[Tensor], argmax: Optional[Tensor],
           padding_idx: int) -> None:
    # pool_mode, not mode: auto_functionalized (torch.compile) reserves the keyword `mode`.
    ids_k, src_index, scale = _gradient_rows(ids, bag_offsets, pool_mode, per_sample_weights, padding_idx)
    if scale is not None:
        scale = scale.to(grad.dtype)
    backends.for_tensor(weight).fused_update(grad, ids_k, src_index, scale, argmax, offsets, widths, weight,
                                             list(states), row_states[0] if row_states else None,
                                             **host.optimizer_args(hparams, step, optimizer),
                                             uniform_width=uniform_width)


def _psw_grad(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor, bag_offsets: Tensor,
              grad: Tensor, d_max: int, padding_idx: int) -> Tensor:
    # d out[b] / d w[k] = row(ids[k]) . grad[b]; padding entries and ids past offsets[-1] get 0.
    n = int(bag_offsets[-1])
    rows = backends.for_tensor(weight).lookup(weight, offsets, widths, ids[:n].contiguous(), d_max, uniform_width)
    result = grad.new_zeros(ids.shape[0])
    result[:n] = (rows * grad[bag_positions(bag_offsets, n)]).sum(1)
    if padding_idx >= 0:
        result[ids == padding_idx] = 0
    return result


# ---- the custom ops: the bodies above, holding the table's lock (see table.current_layout) -----------------
def _flat_op(weight: Tensor, grad: Tensor, ids: Tensor, bag_offsets: Optional[Tensor], offsets: Tensor,
             widths: Tensor, uniform_width: int, pool_mode: str, per_sample_weights: Optional[Tensor],
             argmax: Optional[Tensor], padding_idx: int, table: int = 0) -> Tensor:
    with current_layout(table, offsets, widths):
        return _flat(weight, grad, ids, bag_offsets, offsets, widths, uniform_width, pool_mode, per_sample_weights,
                     argmax, padding_idx)


flat_backward = torch.library.custom_op("pyscall::flat_backward", mutates_args=())(_flat_op)


@flat_backward.register_fake
def _(weight, grad, ids, bag_offsets, offsets, widths, uniform_width, pool_mode, per_sample_weights, argmax,
      padding_idx, table=0):
    return torch.empty_like(weight)


def _fused_op(weight: Tensor, states: list[Tensor], row_states: list[Tensor], step: Tensor, hparams: Tensor,
              optimizer: str, grad: Tensor, ids: Tensor, bag_offsets: Optional[Tensor], offsets: Tensor,
              widths: Tensor, uniform_width: int, pool_mode: str, per_sample_weights: Optional[Tensor],
              argmax: Optional[Tensor], padding_idx: int, table: int = 0) -> None:
    with current_layout(table, offsets, widths):
        _fused(weight, states, row_states, step, hparams, optimizer, grad, ids, bag_offsets, offsets, widths,
               uniform_width, pool_mode, per_sample_weights, argmax, padding_idx)


fused_backward = torch.library.custom_op("pyscall::fused_backward",
                                         mutates_args=("weight", "states", "row_states", "step"))(_fused_op)


@fused_backward.register_fake
def _(weight, states, row_states, step, hparams, optimizer, grad, ids, bag_offsets, offsets, widths, uniform_width,
      pool_mode, per_sample_weights, argmax, padding_idx, table=0):
    return None


def _psw_grad_op(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor,
                 bag_offsets: Tensor, grad: Tensor, d_max: int, padding_idx: int, table: int = 0) -> Tensor:
    with current_layout(table, offsets, widths):
        return _psw_grad(weight, offsets, widths, uniform_width, ids, bag_offsets, grad, d_max, padding_idx)


per_sample_weights_grad = torch.library.custom_op("pyscall::per_sample_weights_grad",
                                                  mutates_args=())(_psw_grad_op)


@per_sample_weights_grad.register_fake
def _(weight, offsets, widths, uniform_width, ids, bag_offsets, grad, d_max, padding_idx, table=0):
    return grad.new_empty((ids.shape[0],))


# ---- which implementation a backward runs ---------------------------------------------------------------
class Backward(NamedTuple):
    fused: Callable
    flat: Callable
    psw_grad: Callable


def _fused_eager(weight, states, row_states, step, *args):
    _fused(weight, states, row_states, step, *args)
    # As the custom op's mutation does: a saved copy of these tensors is now stale, and autograd must see it.
    torch.autograd.graph.increment_version([weight, *states, *row_states, step])


EAGER = Backward(_fused_eager, _flat, _psw_grad)
EAGER_SPARSE = Backward(_fused_eager, _sparse, _psw_grad)


def custom() -> Backward:
    """The custom ops, for the autograd formulas of the compiled forward ops."""
    return Backward(torch.ops.pyscall.fused_backward, torch.ops.pyscall.flat_backward,
                    torch.ops.pyscall.per_sample_weights_grad)


# ---- the one place the bundles become the ops' arguments ------------------------------------------------
def weight_grad(ops: Backward, table: Table, grad, ids, bag_offsets, pool_mode, psw, argmax, padding_idx, key):
    return ops.flat(table.weight, grad, ids, bag_offsets, table.offsets, table.widths, table.uniform_width,
                    pool_mode, psw, argmax, padding_idx, *key)


def update(ops: Backward, table: Table, fused: Fused, grad, ids, bag_offsets, pool_mode, psw, argmax, padding_idx,
           key) -> None:
    ops.fused(table.weight, *fused, grad, ids, bag_offsets, table.offsets, table.widths, table.uniform_width,
              pool_mode, psw, argmax, padding_idx, *key)


def psw_grad(ops: Backward, table: Table, ids, bag_offsets, grad, d_max, padding_idx, key):
    return ops.psw_grad(*table, ids, bag_offsets, grad, d_max, padding_idx, *key)
