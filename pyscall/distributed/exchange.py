"""The all-to-all exchange that carries ids out and ragged rows (and their gradients) back, and the rule that
an error on one rank is raised on every rank (no rank left waiting in a collective).

Everything here is 1-D: a rank sends `send_splits[j]` elements to rank j and receives `recv_splits[j]` from it.
gloo and NCCL both implement `all_to_all_single` with uneven splits; only gloo is tested here.
"""
from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["WIRE", "all_to_all", "AllToAll", "raise_together", "change_together", "exchange_counts", "ragged_index",
           "RANK_ERRORS"]

# What a rank may raise while checking or making its part of a collective call; anything else is a bug and
# propagates at once.
RANK_ERRORS = (IndexError, TypeError, ValueError, KeyError, NotImplementedError, RuntimeError, MemoryError)


def ragged_index(starts: Tensor, widths: Tensor) -> Tensor:
    """Flat positions starts[k] .. starts[k] + widths[k] - 1 of every k, in order: how a ragged row set is cut
    out of (or written into) a flat buffer. Index ops on these are several times faster than a [rows, d_max]
    boolean mask."""
    widths = widths.to(torch.int64)
    firsts = torch.cumsum(widths, 0) - widths
    return torch.repeat_interleave(starts.to(torch.int64) - firsts, widths) + torch.arange(int(widths.sum()))


class WireBytes:
    """Bytes this process sent to other ranks through `all_to_all` (its own share stays in memory and is not
    counted), calls, and seconds spent in them. `reset()` before a measurement."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sent = 0
        self.calls = 0
        self.seconds = 0.0  # wall time inside the collectives (waiting for the slowest rank included)


WIRE = WireBytes()


def all_to_all(tensor: Tensor, send_splits: Sequence[int], recv_splits: Sequence[int], group=None) -> Tensor:
    """`tensor` cut into `send_splits` goes to ranks 0..world-1; returns what they sent here, in rank order."""
    if dist.get_world_size(group) == 1:  # nothing to send; gloo would still cost about a millisecond a call
        return tensor.clone()
    out = tensor.new_empty((int(sum(recv_splits)),) + tuple(tensor.shape[1:]))
    rank = dist.get_rank(group)
    WIRE.sent += (int(sum(send_splits)) - int(send_splits[rank])) * math.prod(tensor.shape[1:]) * tensor.element_size()
    WIRE.calls += 1
    start = time.perf_counter()
    dist.all_to_all_single(out, tensor.contiguous(), output_split_sizes=list(recv_splits),
                           input_split_sizes=list(send_splits), group=group)
    WIRE.seconds += time.perf_counter() - start
    return out


class AllToAll(torch.autograd.Function):
    """Differentiable `all_to_all`: the gradient goes back by the same routes, splits swapped."""

    @staticmethod
    def forward(ctx, tensor: Tensor, send_splits: list, recv_splits: list, group) -> Tensor:
        ctx.splits = (send_splits, recv_splits)
        ctx.group = group
        return all_to_all(tensor, send_splits, recv_splits, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        send_splits, recv_splits = ctx.splits
        return all_to_all(grad, recv_splits, send_splits, ctx.group), None, None, None


def raise_together(error: Optional[BaseException], group=None) -> None:
    """Collective: when any rank passes an error, every rank raises the first failing rank's error (same type,
    same message, naming that rank). A rank with no error passes None. Nothing is raised when no rank failed."""
    world = dist.get_world_size(group)
    mine = None if error is None else (type(error), str(error))
    gathered: list = [None] * world
    dist.all_gather_object(gathered, mine, group=group)
    for rank, item in enumerate(gathered):
        if item is not None:
            kind, message = item
            raise _rebuild(kind, f"rank {rank}: {message}") from error


def change_together(change, undo, group=None):
    """Collective: `change()` on every rank; if it raised on any rank, the ranks where it did not run `undo()`,
    and every rank raises the first failing rank's error. Returns what `change()` returned."""
    error, result = None, None
    try:
        result = change()
    except RANK_ERRORS as e:
        error = e
    try:
        raise_together(error, group)
    except BaseException:
        if error is None:
            undo()
        raise
    return result


def _rebuild(kind: type, message: str) -> BaseException:
    try:
        return kind(message)
    except Exception:  # an exception class that does not take one message
        return RuntimeError(f"{kind.__name__}: {message}")


def exchange_counts(counts: Tensor, error: Optional[BaseException], group=None) -> Tensor:
    """The first step of a lookup: each rank tells each other rank how many ids it will send. A rank whose input
    is bad sends -1 to everyone instead, so every rank learns of it in this same collective and all raise
    together (the lookup then stops before any id moves). Returns the counts received, one per rank."""
    world = dist.get_world_size(group)
    send = torch.full((world,), -1, dtype=torch.int64) if error is not None else counts.to(torch.int64)
    recv = all_to_all(send, [1] * world, [1] * world, group)
    if bool((recv < 0).any()) or error is not None:
        raise_together(error, group)
    return recv
