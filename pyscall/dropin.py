"""Drop-in mode (no fused optimizer: torch optimizers train `weight`): what moves with the rows when the layout
changes (the optimizers' per-element state, weight.grad), and the step hook that refuses an optimizer whose state
predates a layout change it was not given."""
from __future__ import annotations

import weakref
from typing import Iterable, Optional, Union

import torch
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.weak import WeakIdKeyDictionary

OptimizerArg = Union[torch.optim.Optimizer, Iterable[torch.optim.Optimizer], None]

# weight Parameter -> weak reference to its table, for the step hook below (an attribute on the Parameter would
# stop it from pickling).
TABLES = WeakIdKeyDictionary()


def bind(table) -> None:
    """Lets the step hook find `table` from its weight."""
    TABLES[table.weight] = weakref.ref(table)


def as_optimizers(optimizer: OptimizerArg) -> list:
    if optimizer is None:
        return []
    if isinstance(optimizer, torch.optim.Optimizer):
        return [optimizer]
    return list(optimizer)


def optimizer_companions(table, optimizers: list) -> list:
    """Per-element state tensors of torch optimizers (drop-in mode), moved with the rows."""
    found = []
    for opt in optimizers:
        for value in opt.state.get(table.weight, {}).values():
            if torch.is_tensor(value) and value.shape == table.weight.shape:
                found.append(value)
    return found


def grad_companions(table) -> tuple[list, Optional[Tensor]]:
    """weight.grad laid out like the weight, to move with the rows (drop-in mode keeps a gradient across a
    layout change): (companions, presence). A sparse gradient moves as its dense values plus a presence mask
    (1 where it has an entry), from which it is rebuilt; a gradient of another shape stays as it is."""
    grad = table.weight.grad
    if grad is None or grad.shape != table.weight.shape or grad.device != table.weight.device:
        return [], None
    if grad.is_sparse:
        grad = grad.coalesce()
        presence = torch.zeros(grad.shape, dtype=grad.dtype, device=grad.device)
        presence[grad.indices()[0]] = 1
        return [grad.to_dense(), presence], presence
    if grad.layout != torch.strided or not grad.is_contiguous():
        return [], None
    # A new tensor over the same storage: the layout swaps its storage, while a torch op that another
    # thread may be running on weight.grad keeps the old one alive.
    return [grad.detach()], None


def set_moved_grad(table, grads: list, presence: Optional[Tensor]) -> None:
    """weight.grad from the companions grad_companions gave, now laid out as the rows are."""
    if not grads:
        return
    if presence is None:
        table.weight.grad = grads[0]
        return
    values, mask = grads  # the sparse gradient, rebuilt at the rows' new places
    index = mask.nonzero().t()
    table.weight.grad = torch.sparse_coo_tensor(index, values[index[0]], values.shape, is_coalesced=True,
                                               check_invariants=False)  # indices in range by construction


def _check_optimizer_alignment(optimizer, args, kwargs):
    """Refuse a torch optimizer step whose state predates a layout change of a pyscall table."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            table_ref = TABLES.get(param)
            table = table_ref() if table_ref is not None else None
            if table is None:
                continue
            # First sight: any state is fresh (lazy, or Adagrad's constant init), so aligned.
            aligned = table._aligned.setdefault(optimizer, table._layout_version)
            if optimizer.state.get(param) and aligned != table._layout_version:
                raise RuntimeError(
                    "this optimizer's state for a pyscall table predates a change of its row layout; pass "
                    "the optimizer to the layout call (e.g. emb.resize(ids, widths, optimizer=opt)) so its "
                    "state moves with the rows")


register_optimizer_step_pre_hook(_check_optimizer_alignment)
