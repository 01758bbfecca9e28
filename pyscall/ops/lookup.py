"""Padded lookup, ids [N] -> [N, d_max]: the custom op pyscall::embedding_lookup (torch.compile), its fake, its
autograd formula, and the eager path, which runs the same body and formula through an autograd.Function because
the custom-op autograd wrapper costs more Python per call than the kernels themselves at batch 4096."""
from __future__ import annotations

import torch
from torch import Tensor

from .. import backends
from .backward import EAGER, EAGER_SPARSE, Backward, custom, update, weight_grad
from .table import Fused, Table, current_layout, holding, no_sparse_under_compile, restore_table, save_table


def _forward(table: Table, ids: Tensor, d_max: int) -> Tensor:
    # The backend raises IndexError for an id out of range (pyscall/backends/CONTRACT.md).
    return backends.for_tensor(table.weight).lookup(table.weight, table.offsets, table.widths, ids, d_max,
                                                    table.uniform_width)


def _setup(ctx, table: Table, ids: Tensor, padding_idx: int, fused: Fused, key: tuple) -> None:
    ctx.padding_idx, ctx.key = padding_idx, key  # key: (the table's lock key,) for the compiled backward ops
    save_table(ctx, table, fused, False, ids)


def _grad_weight(ctx, grad: Tensor, ops: Backward):
    """Gradient of the flat weight (drop-in mode), or None after applying the fused update."""
    table, fused, (ids,) = restore_table(ctx)
    if fused.optimizer:
        update(ops, table, fused, grad.contiguous(), ids, None, "", None, None, ctx.padding_idx, ctx.key)
        return None
    return weight_grad(ops, table, grad.contiguous(), ids, None, "", None, None, ctx.padding_idx, ctx.key)


# ---- the custom op: flat arguments, Table then ids, d_max, padding_idx, then Fused, then the lock key --------
def _op(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor, d_max: int,
        padding_idx: int, states: list[Tensor], row_states: list[Tensor], step: Tensor, hparams: Tensor,
        optimizer: str, key: int = 0) -> Tensor:
    # states .. optimizer ride along only for the backward (the fused update).
    with current_layout(key, offsets, widths):
        return _forward(Table(weight, offsets, widths, uniform_width), ids, d_max)


embedding_lookup = torch.library.custom_op("pyscall::embedding_lookup", mutates_args=())(_op)


@embedding_lookup.register_fake
def _(weight, offsets, widths, uniform_width, ids, d_max, padding_idx, states, row_states, step, hparams, optimizer,
      key=0):
    return weight.new_empty((ids.shape[0], d_max))


def _setup_op(ctx, inputs, output):
    _setup(ctx, Table(*inputs[:4]), inputs[4], inputs[6], Fused(*inputs[7:12]), tuple(inputs[12:]))


def _backward_op(ctx, grad):
    grad_weight = _grad_weight(ctx, grad, custom())
    return ((grad_weight,) + (None,) * 6 + ([None] * len(ctx.fused.states), [None] * len(ctx.fused.row_states))
            + (None,) * 4)


embedding_lookup.register_autograd(_backward_op, setup_context=_setup_op)


# ---- eager ---------------------------------------------------------------------------------------------------
class _Eager(torch.autograd.Function):
    # apply(weight, inputs): the bundles ride in one tuple after the weight, the only input that takes a gradient
    # (autograd.Function.apply costs about half a microsecond per argument). lock: the table's layout lock, which
    # the caller holds for the forward and the backward takes again.
    @staticmethod
    def forward(ctx, weight, inputs, sparse, lock):
        table, ids, d_max, padding_idx, fused = inputs
        out = _forward(table, ids, d_max)
        _setup(ctx, table, ids, padding_idx, fused, ())
        ctx.ops, ctx.lock = EAGER_SPARSE if sparse else EAGER, lock
        return out

    @staticmethod
    def backward(ctx, grad):
        return holding(ctx.lock, _grad_weight, ctx, grad, ctx.ops), None, None, None


def lookup(table: Table, ids: Tensor, d_max: int, padding_idx: int, fused: Fused, sparse: bool = False, lock=None,
           key: int = 0) -> Tensor:
    """Padded lookup ids [N] -> [N, d_max] with its backward (flat gradient, dense or sparse, or fused update).
    lock: the table's LayoutLock, which the caller holds (shared) around this call and the eager backward takes
    for its kernels. key: its key (RaggedArena.lock_key), with which the compiled ops take it themselves."""
    if torch.compiler.is_compiling():
        no_sparse_under_compile(sparse)
        return embedding_lookup(*table, ids, d_max, padding_idx, *fused, key)
    if torch.is_grad_enabled() and table.weight.requires_grad:
        return _Eager.apply(table.weight, (table, ids, d_max, padding_idx, fused), sparse, lock)
    return _forward(table, ids, d_max)  # inference: no graph to record
