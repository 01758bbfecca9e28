"""The pyscall operators, registered with torch.library so that torch.compile traces through them.

Every lookup of a ragged table happens here: `lookup` (padded rows) and `bag` (pooled bags) run
forward; their backward either produces the gradient of the flat weight buffer (drop-in mode,
`optimizer == ""`) or applies the fused optimizer to the touched rows in place. Under torch.compile
they are the custom ops `pyscall::embedding_lookup` / `pyscall::bag_lookup`; eager calls run the same
bodies and backward formulas through a torch.autograd.Function, because the custom-op autograd
wrapper costs about 0.4 ms a call in Python, more than the kernels themselves at batch 4096.
Kernels come from `pyscall.backends.cpu` (C++ `_C`) for CPU tensors and from `pyscall.backends.triton`
for CUDA tensors, or for CPU tensors too when PYSCALL_BACKEND=triton (with
TRITON_INTERPRET=1 set before import, for testing the Triton code without a GPU).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor

from . import backends, host
from .arena import LayoutLock
from .spec import POOL_MODES

MODES = tuple(POOL_MODES)


backend = backends.for_tensor  # the kernel module for tensors on the device of its argument


def _drop_padding(ids: Tensor, bag_offsets: Tensor, padding_idx: int, n: int):
    """Remove padding entries from bags (torch excludes them from sums, means and maxima); n is
    bag_offsets[-1], the number of indices the bags use.

    Returns (kept ids, their bag offsets, positions kept in the original input or None if all were).
    """
    if n < ids.numel():  # (a slice costs about 2 us even when it keeps everything)
        ids = ids[:n]
    if padding_idx < 0:
        return ids, bag_offsets, None
    keep = ids != padding_idx
    if bool(keep.all()):
        return ids, bag_offsets, None
    kept_before = torch.cat([ids.new_zeros(1), keep.cumsum(0)])
    return ids[keep], kept_before[bag_offsets], keep.nonzero().squeeze(1)


def _bag_positions(bag_offsets: Tensor, n: int) -> Tensor:
    """Bag index of each of the n positions."""
    counts = bag_offsets[1:] - bag_offsets[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=bag_offsets.device), counts,
                                   output_size=n)


def _bag_gradient_rows(ids, bag_offsets, mode, per_sample_weights, padding_idx):
    """(kept ids, src_index, scale) of the kernel contract for a pooled backward."""
    ids_k, offs_k, kept = _drop_padding(ids, bag_offsets, padding_idx, int(bag_offsets[-1]))
    src_index = _bag_positions(offs_k, ids_k.numel())
    scale = None
    if mode == "mean":
        counts = (offs_k[1:] - offs_k[:-1]).clamp_min(1)
        scale = (1.0 / counts.to(torch.float64))[src_index]
    elif per_sample_weights is not None:
        scale = per_sample_weights[: int(bag_offsets[-1])]
        scale = scale if kept is None else scale[kept]
    return ids_k, offs_k, src_index, scale


def _saved_tensors(ctx) -> tuple:
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
        if ctx.optimizer and getattr(ctx, "has_psw", False):
            raise RuntimeError(f"{e}\nThat tensor is the table's weight: the gradient of per_sample_weights reads "
                               "the rows as this forward saw them, and a fused update (another lookup of the "
                               "table in this graph, or a backward since) changed them first. Look such a table "
                               "up once per backward, or pass per_sample_weights that need no gradient.") from e
        raise


def _same_memory(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.numel() == b.numel()


@contextlib.contextmanager
def _current_layout(table: int, offsets: Tensor, widths: Tensor):
    """The body of a compiled op (which takes ints, not objects) holds its table's layout lock shared, the key
    `table` naming it (0: none, a direct call), and first checks that `offsets` and `widths` are the table's
    metadata now: another thread may have re-laid it out, freeing them, since the compiled code read them."""
    lock = LayoutLock.find(table) if table else None
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


# ---------------------------------------------------------------------------------------------
# Padded lookup: ids [N] -> [N, d_max]
# ---------------------------------------------------------------------------------------------
def _lookup_forward(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor, d_max: int,
                    padding_idx: int, states: list[Tensor], row_states: list[Tensor], step: Tensor,
                    hparams: Tensor, optimizer: str) -> Tensor:
    # states/row_states/step/hparams/optimizer ride along only for the backward (the fused update).
    # The backend raises IndexError for an id out of range (pyscall/backends/CONTRACT.md).
    return backend(weight).lookup(weight, offsets, widths, ids, d_max, uniform_width)


def _lookup_op(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor, d_max: int,
               padding_idx: int, states: list[Tensor], row_states: list[Tensor], step: Tensor, hparams: Tensor,
               optimizer: str, table: int = 0) -> Tensor:
    # The compiled op: `table` names the table's layout lock (see _current_layout).
    with _current_layout(table, offsets, widths):
        return _lookup_forward(weight, offsets, widths, uniform_width, ids, d_max, padding_idx, states, row_states,
                               step, hparams, optimizer)


embedding_lookup = torch.library.custom_op("pyscall::embedding_lookup", mutates_args=())(_lookup_op)


@embedding_lookup.register_fake
def _(weight, offsets, widths, uniform_width, ids, d_max, padding_idx, states, row_states, step, hparams, optimizer,
      table=0):
    return weight.new_empty((ids.shape[0], d_max))


def _keep_fused_buffers(ctx, weight, states, row_states, step, check_weight: bool) -> Optional[Tensor]:
    """Keeps what a fused update writes (weight, states, row_states, step) in ctx, out of save_for_backward:
    each lookup of a table in one graph applies its own update when its backward runs, and a saved
    tensor's version check would refuse every lookup after the first. Returns the weight to save with
    its version checked (check_weight: the backward reads its values, which must be the forward's) or None."""
    ctx.fused_buffers = (weight, states, row_states, step)
    return weight if check_weight else None


def _lookup_setup(ctx, inputs, output):
    weight, offsets, widths, ctx.uniform_width, ids, _, ctx.padding_idx, states, row_states, step, hparams, \
        ctx.optimizer = inputs[:12]
    ctx.table = tuple(inputs[12:])  # (the table's lock key,) for the compiled backward ops; () in eager
    ctx.n_states, ctx.n_row_states = len(states), len(row_states)
    if ctx.optimizer:
        weight = _keep_fused_buffers(ctx, weight, states, row_states, step, check_weight=False)
    ctx.save_for_backward(weight, offsets, widths, ids, hparams)


def _lookup_grad_weight(ctx, grad, backward_ops):
    """Gradient of the flat weight (drop-in mode), or None after applying the fused update."""
    fused, flat, _ = backward_ops
    weight, offsets, widths, ids, hparams = _saved_tensors(ctx)
    if ctx.optimizer:
        weight, states, row_states, step = ctx.fused_buffers
        fused(weight, states, row_states, step, hparams, ctx.optimizer, grad.contiguous(), ids, None,
              offsets, widths, ctx.uniform_width, "", None, None, ctx.padding_idx, *ctx.table)
        return None
    return flat(weight, grad.contiguous(), ids, None, offsets, widths, ctx.uniform_width, "", None, None,
                ctx.padding_idx, *ctx.table)


def _lookup_backward(ctx, grad):
    grad_weight = _lookup_grad_weight(ctx, grad, _custom_backward_ops())
    return (grad_weight,) + (None,) * 6 + ([None] * ctx.n_states, [None] * ctx.n_row_states) + (None,) * 4


embedding_lookup.register_autograd(_lookup_backward, setup_context=_lookup_setup)


# ---------------------------------------------------------------------------------------------
# Pooled lookup: bags by offsets [B+1] -> [B, d_max]
# ---------------------------------------------------------------------------------------------
def _bag_pooled(weight, offsets, widths, uniform_width, ids, bag_offsets, mode, per_sample_weights, d_max, padding_idx):
    """(out [B, d_max], argmax [B, d_max] for "max" else None): the first ten arguments of bag_lookup."""
    n = host.bag_end(bag_offsets, ids.numel())
    ids_k, offs_k, kept = _drop_padding(ids, bag_offsets, padding_idx, n)
    psw = per_sample_weights
    if psw is not None:
        psw = psw[:n]
        psw = (psw if kept is None else psw[kept]).contiguous()
    return backend(weight).pooled(weight, offsets, widths, ids_k, offs_k, mode, psw, d_max, uniform_width)


def _bag_forward(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor, bag_offsets: Tensor,
                 mode: str, per_sample_weights: Optional[Tensor], d_max: int, padding_idx: int,
                 states: list[Tensor], row_states: list[Tensor], step: Tensor, hparams: Tensor,
                 optimizer: str) -> tuple[Tensor, Tensor]:
    # states/row_states/step/hparams/optimizer ride along only for the backward (the fused update).
    out, argmax = _bag_pooled(weight, offsets, widths, uniform_width, ids, bag_offsets, mode, per_sample_weights,
                              d_max, padding_idx)
    return out, (argmax if argmax is not None else ids.new_empty((0,)))  # a custom op returns tensors only


def _bag_op(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor, bag_offsets: Tensor,
            mode: str, per_sample_weights: Optional[Tensor], d_max: int, padding_idx: int, states: list[Tensor],
            row_states: list[Tensor], step: Tensor, hparams: Tensor, optimizer: str,
            table: int = 0) -> tuple[Tensor, Tensor]:
    with _current_layout(table, offsets, widths):  # the compiled op, as _lookup_op
        return _bag_forward(weight, offsets, widths, uniform_width, ids, bag_offsets, mode, per_sample_weights, d_max,
                            padding_idx, states, row_states, step, hparams, optimizer)


bag_lookup = torch.library.custom_op("pyscall::bag_lookup", mutates_args=())(_bag_op)


@bag_lookup.register_fake
def _(weight, offsets, widths, uniform_width, ids, bag_offsets, mode, per_sample_weights, d_max, padding_idx, states,
      row_states, step, hparams, optimizer, table=0):
    bags = bag_offsets.shape[0] - 1
    argmax = ids.new_empty((bags, d_max)) if mode == "max" else ids.new_empty((0,))
    return weight.new_empty((bags, d_max)), argmax


def _bag_setup(ctx, inputs, output):
    (weight, offsets, widths, uniform_width, ids, bag_offsets, mode, psw, d_max, padding_idx, states, row_states,
     step, hparams, optimizer) = inputs[:15]
    ctx.table = tuple(inputs[15:])  # as in _lookup_setup
    ctx.mode, ctx.d_max, ctx.padding_idx, ctx.optimizer = mode, d_max, padding_idx, optimizer
    ctx.uniform_width = uniform_width
    ctx.n_states, ctx.n_row_states, ctx.has_psw = len(states), len(row_states), psw is not None
    if optimizer:  # the weight stays checked where the gradient of per_sample_weights reads the rows
        weight = _keep_fused_buffers(ctx, weight, states, row_states, step,
                                     check_weight=ctx.has_psw and psw.requires_grad)
    # output[1] is argmax: None (eager) or empty (custom op) unless mode is "max".
    ctx.save_for_backward(weight, offsets, widths, ids, bag_offsets, output[1], hparams, psw)


def _bag_grads(ctx, grad, backward_ops, needs_weight_grad: bool, needs_psw_grad: bool):
    """(gradient of the flat weight or None, gradient of per_sample_weights or None)."""
    fused, flat, psw_grad = backward_ops
    weight, offsets, widths, ids, bag_offsets, argmax, hparams, psw = _saved_tensors(ctx)
    if ctx.optimizer:
        weight, states, row_states, step = ctx.fused_buffers
    argmax = argmax if ctx.mode == "max" else None
    grad = grad.contiguous()
    grad_weight = grad_psw = None
    if ctx.has_psw and needs_psw_grad:  # first: it reads the rows as the forward saw them, before a fused update
        grad_psw = psw_grad(weight, offsets, widths, ctx.uniform_width, ids, bag_offsets, grad, ctx.d_max,
                            ctx.padding_idx, *ctx.table)
    if ctx.optimizer:
        fused(weight, states, row_states, step, hparams, ctx.optimizer, grad, ids, bag_offsets, offsets,
              widths, ctx.uniform_width, ctx.mode, psw, argmax, ctx.padding_idx, *ctx.table)
    elif needs_weight_grad:
        grad_weight = flat(weight, grad, ids, bag_offsets, offsets, widths, ctx.uniform_width, ctx.mode, psw, argmax,
                           ctx.padding_idx, *ctx.table)
    return grad_weight, grad_psw


def _bag_backward(ctx, grad, _grad_argmax):
    needs = ctx.needs_input_grad  # inputs 0 and 7: weight and per_sample_weights
    grad_weight, grad_psw = _bag_grads(ctx, grad, _custom_backward_ops(), needs[0], needs[7])
    return ((grad_weight, None, None, None, None, None, None, grad_psw) + (None,) * 2
            + ([None] * ctx.n_states, [None] * ctx.n_row_states) + (None,) * 4)


bag_lookup.register_autograd(_bag_backward, setup_context=_bag_setup)


# ---------------------------------------------------------------------------------------------
# Backward ops (called from the autograd formulas above)
# ---------------------------------------------------------------------------------------------
def _gradient_rows(ids, bag_offsets, mode, psw, padding_idx):
    """Kernel-contract arguments (ids, src_index, scale) for a padded or pooled backward."""
    if bag_offsets is not None:
        ids_k, _, src_index, scale = _bag_gradient_rows(ids, bag_offsets, mode, psw, padding_idx)
        return ids_k, src_index, scale
    if padding_idx >= 0:
        kept = (ids != padding_idx).nonzero().squeeze(1)
        return ids[kept], kept, None
    return ids, None, None


def _flat_backward(weight: Tensor, grad: Tensor, ids: Tensor, bag_offsets: Optional[Tensor], offsets: Tensor,
                  widths: Tensor, uniform_width: int, pool_mode: str, per_sample_weights: Optional[Tensor],
                  argmax: Optional[Tensor], padding_idx: int) -> Tensor:
    ids_k, src_index, scale = _gradient_rows(ids, bag_offsets, pool_mode, per_sample_weights, padding_idx)
    if scale is not None:
        scale = scale.to(grad.dtype)
    return backend(weight).flat_grad(grad, ids_k, src_index, scale, argmax, offsets, widths, weight.numel(),
                                     uniform_width)


def _flat_backward_op(weight: Tensor, grad: Tensor, ids: Tensor, bag_offsets: Optional[Tensor], offsets: Tensor,
                      widths: Tensor, uniform_width: int, pool_mode: str, per_sample_weights: Optional[Tensor],
                      argmax: Optional[Tensor], padding_idx: int, table: int = 0) -> Tensor:
    with _current_layout(table, offsets, widths):  # the compiled op, as _lookup_op
        return _flat_backward(weight, grad, ids, bag_offsets, offsets, widths, uniform_width, pool_mode,
                              per_sample_weights, argmax, padding_idx)


flat_backward = torch.library.custom_op("pyscall::flat_backward", mutates_args=())(_flat_backward_op)


@flat_backward.register_fake
def _(weight, grad, ids, bag_offsets, offsets, widths, uniform_width, pool_mode, per_sample_weights, argmax,
      padding_idx, table=0):
    return torch.empty_like(weight)


def _sparse_backward(weight: Tensor, grad: Tensor, ids: Tensor, bag_offsets: Optional[Tensor], offsets: Tensor,
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


def _fused_backward(weight: Tensor, states: list[Tensor], row_states: list[Tensor], step: Tensor,
                   hparams: Tensor, optimizer: str, grad: Tensor, ids: Tensor, bag_offsets: Optional[Tensor],
                   offsets: Tensor, widths: Tensor, uniform_width: int, pool_mode: str,
                   per_sample_weights: Optional[Tensor], argmax: Optional[Tensor], padding_idx: int) -> None:
    # pool_mode, not mode: auto_functionalized (torch.compile) reserves the keyword `mode`.
    ids_k, src_index, scale = _gradient_rows(ids, bag_offsets, pool_mode, per_sample_weights, padding_idx)
    if scale is not None:
        scale = scale.to(grad.dtype)
    backend(weight).fused_update(grad, ids_k, src_index, scale, argmax, offsets, widths, weight,
                                 list(states), row_states[0] if row_states else None,
                                 **host.optimizer_args(hparams, step, optimizer), uniform_width=uniform_width)


def _fused_backward_op(weight: Tensor, states: list[Tensor], row_states: list[Tensor], step: Tensor,
                       hparams: Tensor, optimizer: str, grad: Tensor, ids: Tensor, bag_offsets: Optional[Tensor],
                       offsets: Tensor, widths: Tensor, uniform_width: int, pool_mode: str,
                       per_sample_weights: Optional[Tensor], argmax: Optional[Tensor], padding_idx: int,
                       table: int = 0) -> None:
    with _current_layout(table, offsets, widths):  # the compiled op, as _lookup_op
        _fused_backward(weight, states, row_states, step, hparams, optimizer, grad, ids, bag_offsets, offsets, widths,
                        uniform_width, pool_mode, per_sample_weights, argmax, padding_idx)


fused_backward = torch.library.custom_op("pyscall::fused_backward",
                                         mutates_args=("weight", "states", "row_states", "step"))(_fused_backward_op)


@fused_backward.register_fake
def _(weight, states, row_states, step, hparams, optimizer, grad, ids, bag_offsets, offsets, widths, uniform_width,
      pool_mode, per_sample_weights, argmax, padding_idx, table=0):
    return None


def _per_sample_weights_grad(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor,
                            bag_offsets: Tensor, grad: Tensor, d_max: int, padding_idx: int) -> Tensor:
    # d out[b] / d w[k] = row(ids[k]) . grad[b]; padding entries and ids past offsets[-1] get 0.
    n = int(bag_offsets[-1])
    rows = backend(weight).lookup(weight, offsets, widths, ids[:n].contiguous(), d_max, uniform_width)
    result = grad.new_zeros(ids.shape[0])
    result[:n] = (rows * grad[_bag_positions(bag_offsets, n)]).sum(1)
    if padding_idx >= 0:
        result[ids == padding_idx] = 0
    return result


def _per_sample_weights_grad_op(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor,
                                bag_offsets: Tensor, grad: Tensor, d_max: int, padding_idx: int,
                                table: int = 0) -> Tensor:
    with _current_layout(table, offsets, widths):  # the compiled op, as _lookup_op
        return _per_sample_weights_grad(weight, offsets, widths, uniform_width, ids, bag_offsets, grad, d_max,
                                        padding_idx)


per_sample_weights_grad = torch.library.custom_op("pyscall::per_sample_weights_grad",
                                                  mutates_args=())(_per_sample_weights_grad_op)


@per_sample_weights_grad.register_fake
def _(weight, offsets, widths, uniform_width, ids, bag_offsets, grad, d_max, padding_idx, table=0):
    return grad.new_empty((ids.shape[0],))


# ---------------------------------------------------------------------------------------------
# Entry points: the custom ops under torch.compile, an autograd.Function over the same bodies in eager
# ---------------------------------------------------------------------------------------------
def _custom_backward_ops():
    return torch.ops.pyscall.fused_backward, torch.ops.pyscall.flat_backward, torch.ops.pyscall.per_sample_weights_grad


def _fused_backward_eager(weight, states, row_states, step, *args):
    _fused_backward(weight, states, row_states, step, *args)
    # As the custom op's mutation does: a saved copy of these tensors is now stale, and autograd must see it.
    torch.autograd.graph.increment_version([weight, *states, *row_states, step])


_EAGER_BACKWARD_OPS = (_fused_backward_eager, _flat_backward, _per_sample_weights_grad)
_EAGER_SPARSE_BACKWARD_OPS = (_fused_backward_eager, _sparse_backward, _per_sample_weights_grad)


def _holding(lock, fn, *args):
    """fn(*args) holding the table's layout lock shared (pyscall.arena.LayoutLock; None: no lock), so that
    no other thread re-lays the table out between the check of the saved layout and the kernel's end."""
    if lock is None:
        return fn(*args)
    lock.acquire_shared()
    try:
        return fn(*args)
    finally:
        lock.release_shared()


# apply(weight, inputs): the op's arguments ride in one tuple after the weight, the only one that takes
# a gradient, since autograd.Function.apply costs about half a microsecond per argument. `lock`: the
# table's layout lock, which the caller holds for the forward and the backward takes again.
class _EagerLookup(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, inputs, sparse, lock):
        out = _lookup_forward(*inputs)
        _lookup_setup(ctx, inputs, out)
        ctx.backward_ops = _EAGER_SPARSE_BACKWARD_OPS if sparse else _EAGER_BACKWARD_OPS
        ctx.lock = lock
        return out

    @staticmethod
    def backward(ctx, grad):
        return _holding(ctx.lock, _lookup_grad_weight, ctx, grad, ctx.backward_ops), None, None, None


class _EagerBag(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, per_sample_weights, inputs, sparse, lock):
        # Only out: argmax rides in ctx, and autograd handles one output less.
        out, argmax = _bag_pooled(*inputs[:10])
        _bag_setup(ctx, inputs, (out, argmax))
        ctx.backward_ops = _EAGER_SPARSE_BACKWARD_OPS if sparse else _EAGER_BACKWARD_OPS
        ctx.lock = lock
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_weight, grad_psw = _holding(ctx.lock, _bag_grads, ctx, grad, ctx.backward_ops,
                                         *ctx.needs_input_grad[:2])
        return grad_weight, grad_psw, None, None, None


def _no_sparse_under_compile(sparse: bool) -> None:
    if sparse:
        raise NotImplementedError("pyscall: sparse=True gradients are eager-only; under torch.compile use "
                                  "sparse=False or a fused optimizer")


def lookup(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor, d_max: int,
           padding_idx: int, states: list[Tensor], row_states: list[Tensor], step: Tensor, hparams: Tensor,
           optimizer: str, sparse: bool = False, lock=None, table: int = 0) -> Tensor:
    """Padded lookup ids [N] -> [N, d_max] with its backward (flat gradient, dense or sparse, or fused update).
    uniform_width: the arena's (RaggedArena.uniform_width), never a guess. lock: the table's LayoutLock,
    which the caller holds (shared) around this call and the eager backward takes for its kernels. table: its
    key (RaggedArena.lock_key), with which the compiled ops take it themselves."""
    args = (weight, offsets, widths, uniform_width, ids, d_max, padding_idx, states, row_states, step, hparams,
            optimizer)
    if torch.compiler.is_compiling():
        _no_sparse_under_compile(sparse)
        return embedding_lookup(*args, table)
    if torch.is_grad_enabled() and weight.requires_grad:
        return _EagerLookup.apply(weight, args, sparse, lock)
    return _lookup_forward(*args)  # inference: no graph to record


def bag(weight: Tensor, offsets: Tensor, widths: Tensor, uniform_width: int, ids: Tensor, bag_offsets: Tensor,
        mode: str, per_sample_weights: Optional[Tensor], d_max: int, padding_idx: int, states: list[Tensor],
        row_states: list[Tensor], step: Tensor, hparams: Tensor, optimizer: str, sparse: bool = False,
        lock=None, table: int = 0) -> Tensor:
    """Pooled lookup over bags [B+1] -> [B, d_max] with its backward (lock, table: as for lookup)."""
    args = (weight, offsets, widths, uniform_width, ids, bag_offsets, mode, per_sample_weights, d_max, padding_idx,
            states, row_states, step, hparams, optimizer)
    if torch.compiler.is_compiling():
        _no_sparse_under_compile(sparse)
        return bag_lookup(*args, table)[0]
    psw_grad = per_sample_weights is not None and per_sample_weights.requires_grad
    if torch.is_grad_enabled() and (weight.requires_grad or psw_grad):
        return _EagerBag.apply(weight, per_sample_weights, args, sparse, lock)
    return _bag_pooled(*args[:10])[0]  # inference: no graph to record
