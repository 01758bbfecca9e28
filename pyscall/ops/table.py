"""What every op takes about a table, in two small bundles, and how a compiled op makes sure the layout it was
given is still the table's. The bundles travel whole through the eager path; each op module flattens them into
its custom op's positional arguments in one place (torch.library ops take tensors, lists and scalars only)."""
from __future__ import annotations

import contextlib
from typing import NamedTuple

from torch import Tensor

from ..arena import LayoutLock


class Table(NamedTuple):
    """A ragged table as the kernels read it. uniform_width: the arena's (RaggedArena.uniform_width), never a
    guess."""
    weight: Tensor
    offsets: Tensor
    widths: Tensor
    uniform_width: int


class Fused(NamedTuple):
    """The fused optimizer's buffers and name ("" in drop-in mode, where backward yields weight.grad instead)."""
    states: list
    row_states: list
    step: Tensor
    hparams: Tensor
    optimizer: str


def _same_memory(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.numel() == b.numel()


@contextlib.contextmanager
def current_layout(key: int, offsets: Tensor, widths: Tensor):
    """The body of a compiled op (which takes ints, not objects) holds its table's layout lock shared, `key`
    naming it (0: none, a direct call), and first checks that `offsets` and `widths` are the table's metadata
    now: another thread may have re-laid it out, freeing them, since the compiled code read them."""
    lock = LayoutLock.find(key) if key else None
    if lock is None:
        yield
        return
    lock.acquire_shared()
    try:
        arena = lock.arena() if lock.arena is not None else None
        if arena is None or not (_same_memory(offsets, arena.offsets) and _same_memory(widths, arena.widths)):
            raise RuntimeError("pyscall: the table's row layout changed (resize, set_widths, append, release, "
                               "compact or load_state_dict, in another thread) after this compiled lookup or "
                               "backward read it; nothing was read or written, run the step again")
        yield
    finally:
        lock.release_shared()


def holding(lock, fn, *args):
    """fn(*args) holding the table's layout lock shared (None: no lock), so that no other thread re-lays the
    table out between the check of the saved layout and the kernel's end."""
    if lock is None:
        return fn(*args)
    lock.acquire_shared()
    try:
        return fn(*args)
    finally:
        lock.release_shared()


def saved_tensors(ctx) -> tuple:
    """ctx.saved_tensors, with the reason added when a saved tensor of the table changed since forward:
    RaggedArena._refresh bumps the version of the widths (the only int32 tensor) on a layout change, and
    a fused update that of the weight, which a fused bag saves only for the per_sample_weights gradient."""
    try:
        return ctx.saved_tensors
    except RuntimeError as e:
        if "modified by an inplace operation" not in str(e):
            raise
        if "IntTensor" in str(e):
            raise RuntimeError(f"{e}\nThat tensor is the table's widths: its row layout changed (resize, "
                               "set_widths, append, release, compact or load_state_dict) between this forward "
                               "and its backward. Run backward before changing the layout.") from e
        if ctx.fused.optimizer and getattr(ctx, "has_psw", False):
            raise RuntimeError(f"{e}\nThat tensor is the table's weight: the gradient of per_sample_weights reads "
                               "the rows as this forward saw them, and a fused update (another lookup of the "
                               "table in this graph, or a backward since) changed them first. Look such a table "
                               "up once per backward, or pass per_sample_weights that need no gradient.") from e
        raise


def save_table(ctx, table: Table, fused: Fused, check_weight: bool, *others) -> None:
    """Saves what a backward needs: the metadata (version-checked: a layout change since forward must fail it),
    `others`, and the weight only when check_weight (its values must be the forward's); what a fused update
    writes (weight, states, row states, step) rides in ctx unchecked: each lookup of a table in one graph
    applies its own update, and a version check would refuse every lookup after the first."""
    ctx.table, ctx.fused = table, fused
    weight = table.weight if check_weight or not fused.optimizer else None
    ctx.save_for_backward(weight, table.offsets, table.widths, fused.hparams, *others)


def restore_table(ctx) -> tuple:
    """(Table, Fused, others) as save_table saved them, after autograd's version check of the saved tensors
    (which are the bundles' own tensors: unpacking them gives the same objects)."""
    return ctx.table, ctx.fused, saved_tensors(ctx)[4:]


def no_sparse_under_compile(sparse: bool) -> None:
    if sparse:
        raise NotImplementedError("pyscall: sparse=True gradients are eager-only; under torch.compile use "
                                  "sparse=False or a fused optimizer")
