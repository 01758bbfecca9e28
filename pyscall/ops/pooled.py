"""Pooled lookup over bags [B+1] -> [B, d_max] (sum, mean, max; per_sample_weights with sum): the custom op
pyscall::bag_lookup, its fake, its autograd formula, and the eager path (as in lookup.py)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import backends, host
from .backward import EAGER, EAGER_SPARSE, Backward, custom, psw_grad, update, weight_grad
from .bags import drop_padding
from .table import Fused, Table, current_layout, holding, no_sparse_under_compile, restore_table, save_table


def _forward(table: Table, ids: Tensor, bag_offsets: Tensor, mode: str, psw: Optional[Tensor], d_max: int,
             padding_idx: int) -> tuple[Tensor, Optional[Tensor]]:
    """(out [B, d_max], argmax [B, d_max] for "max" else None)."""
    n = host.bag_end(bag_offsets, ids.numel())
    ids_k, offs_k, kept = drop_padding(ids, bag_offsets, padding_idx, n)
    if psw is not None:
        psw = psw[:n]
        psw = (psw if kept is None else psw[kept]).contiguous()
    return backends.for_tensor(table.weight).pooled(table.weight, table.offsets, table.widths, ids_k, offs_k, mode,
                                                    psw, d_max, table.uniform_width)


def _setup(ctx, table: Table, ids, bag_offsets, mode, psw, d_max, padding_idx, fused: Fused, key: tuple,
           argmax) -> None:
    ctx.mode, ctx.d_max, ctx.padding_idx, ctx.key = mode, d_max, padding_idx, key
    ctx.has_psw = psw is not None
    # A fused table's weight stays version-checked where the gradient of per_sample_weights reads the rows.
    save_table(ctx, table, fused, ctx.has_psw and psw.requires_grad, ids, bag_offsets, argmax, psw)


def _grads(ctx, grad: Tensor, ops: Backward, needs_weight_grad: bool, needs_psw_grad: bool):
    """(gradient of the flat weight or None, gradient of per_sample_weights or None)."""
    table, fused, (ids, bag_offsets, argmax, psw) = restore_table(ctx)
    argmax = argmax if ctx.mode == "max" else None  # (the custom op returns an empty one otherwise)
    grad = grad.contiguous()
    grad_weight = grad_psw = None
    if ctx.has_psw and needs_psw_grad:  # first: it reads the rows as the forward saw them, before a fused update
        grad_psw = psw_grad(ops, table, ids, bag_offsets, grad, ctx.d_max, ctx.padding_idx, ctx.key)
    if fused.optimizer:
        update(ops, table, fused, grad, ids, bag_offsets, ctx.mode, psw, argmax, ctx.padding_idx, ctx.key)
    elif needs_weight_grad:
        grad_weight = weight_grad(ops, table, grad, ids, bag_offsets, ctx.mode, psw, argmax, ctx.padding_idx,
                                  ctx.key)
    return grad_weight, grad_psw


# ---- the custom op: Table, then the bag arguments, then Fused, then the lock key --------------------------
def _op(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor, bag_offsets: Tensor,
        mode: str, per_sample_weights: Optional[Tensor], d_max: int, padding_idx: int, states: list[Tensor],
        row_states: list[Tensor], step: Tensor, hparams: Tensor, optimizer: str, key: int = 0) -> tuple[Tensor, Tensor]:
    with current_layout(key, offsets, widths):
        out, argmax = _forward(Table(weight, offsets, widths, uniform_width), ids, bag_offsets, mode,
                               per_sample_weights, d_max, padding_idx)
    return out, (argmax if argmax is not None else ids.new_empty((0,)))  # a custom op returns tensors only


bag_lookup = torch.library.custom_op("pyscall::bag_lookup", mutates_args=())(_op)


@bag_lookup.register_fake
def _(weight, offsets, widths, uniform_width, ids, bag_offsets, mode, per_sample_weights, d_max, padding_idx, states,
      row_states, step, hparams, optimizer, key=0):
    bags = bag_offsets.shape[0] - 1
    argmax = ids.new_empty((bags, d_max)) if mode == "max" else ids.new_empty((0,))
    return weight.new_empty((bags, d_max)), argmax


def _setup_op(ctx, inputs, output):
    _setup(ctx, Table(*inputs[:4]), *inputs[4:10], Fused(*inputs[10:15]), tuple(inputs[15:]), output[1])


def _backward_op(ctx, grad, _grad_argmax):
    needs = ctx.needs_input_grad  # inputs 0 and 7: weight and per_sample_weights
    grad_weight, grad_psw = _grads(ctx, grad, custom(), needs[0], needs[7])
    return ((grad_weight, None, None, None, None, None, None, grad_psw) + (None,) * 2
            + ([None] * len(ctx.fused.states), [None] * len(ctx.fused.row_states)) + (None,) * 4)


bag_lookup.register_autograd(_backward_op, setup_context=_setup_op)


# ---- eager ---------------------------------------------------------------------------------------------------
class _Eager(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, per_sample_weights, inputs, sparse, lock):
        # Only out: argmax rides in ctx, and autograd handles one output less.
        table, ids, bag_offsets, mode, psw, d_max, padding_idx, fused = inputs
        out, argmax = _forward(table, ids, bag_offsets, mode, psw, d_max, padding_idx)
        _setup(ctx, table, ids, bag_offsets, mode, psw, d_max, padding_idx, fused, (), argmax)
        ctx.ops, ctx.lock = EAGER_SPARSE if sparse else EAGER, lock
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_weight, grad_psw = holding(ctx.lock, _grads, ctx, grad, ctx.ops, *ctx.needs_input_grad[:2])
        return grad_weight, grad_psw, None, None, None


def bag(table: Table, ids: Tensor, bag_offsets: Tensor, mode: str, per_sample_weights: Optional[Tensor], d_max: int,
        padding_idx: int, fused: Fused, sparse: bool = False, lock=None, key: int = 0) -> Tensor:
    """Pooled lookup over bags [B+1] -> [B, d_max] with its backward (lock, key: as for lookup)."""
    if torch.compiler.is_compiling():
        no_sparse_under_compile(sparse)
        return bag_lookup(*table, ids, bag_offsets, mode, per_sample_weights, d_max, padding_idx, *fused, key)[0]
    psw_needs_grad = per_sample_weights is not None and per_sample_weights.requires_grad
    if torch.is_grad_enabled() and (table.weight.requires_grad or psw_needs_grad):
        return _Eager.apply(table.weight, per_sample_weights,
                            (table, ids, bag_offsets, mode, per_sample_weights, d_max, padding_idx, fused),
                            sparse, lock)
    return _forward(table, ids, bag_offsets, mode, per_sample_weights, d_max, padding_idx)[0]  # inference
