"""`ShardedEmbedding` / `ShardedEmbeddingBag`: one ragged table cut row-wise over the ranks of a process group.

Each rank holds a `pyscall.Embedding` of the rows it owns (routing.py; bags are pooled by the caller) with its own byte
budget. Every method is collective: all ranks call it together, with their own ids for lookups and with the
same arguments for layout changes. A lookup sends ids to their owners, the owners send the rows back at their
real widths, and the caller assembles them in its input's order; the gradient goes back the same way and the
owner's table applies it (its fused optimizer, or a `.grad` of its weight for a torch optimizer).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..arena import METADATA_BYTES_PER_ROW
from ..embedding import Embedding
from ..errors import BudgetExceededError
from . import manifest, routing
from .exchange import (RANK_ERRORS, AllToAll, all_to_all, change_together, exchange_counts, ragged_index,
                       raise_together)

__all__ = ["ShardedEmbedding", "ShardedEmbeddingBag"]

_BAG_MODES = ("sum", "mean", "max")


def _segment_sums(values: Tensor, counts: Tensor) -> list:
    """Sums of consecutive segments of `values` of lengths `counts` (one per rank), as ints."""
    ends = torch.cumsum(values.to(torch.int64), 0)
    ends = torch.cat([ends.new_zeros(1), ends])
    bounds = torch.cumsum(counts, 0)
    return (ends[bounds] - ends[torch.cat([bounds.new_zeros(1), bounds[:-1]])]).tolist()


class _ShardedTable(nn.Module):

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None, *,
                 widths=None, budget_bytes: Optional[int] = None, process_group=None, **kwargs):
        super().__init__()
        self.group = process_group
        self.world_size = dist.get_world_size(process_group)
        self.rank = dist.get_rank(process_group)
        error, local = None, None
        try:  # every rank gets the same arguments (budget aside), so a bad one fails everywhere alike
            if isinstance(num_embeddings, bool) or not isinstance(num_embeddings, int) or num_embeddings < 0:
                raise TypeError(f"num_embeddings must be an int >= 0, got {num_embeddings!r}")
            local_widths = None
            if widths is not None:
                widths = torch.as_tensor(widths)
                if widths.shape != (num_embeddings,):
                    raise ValueError(f"widths must have shape ({num_embeddings},), got {tuple(widths.shape)}")
                local_widths = widths[self.rank::self.world_size].contiguous()
            if torch.device(kwargs.get("device") or "cpu").type != "cpu":
                raise NotImplementedError("the sharded table runs on the CPU (gloo) so far; its GPU (NCCL) path "
                                          "is not written")
            local_pad = None
            if padding_idx is not None:
                if isinstance(padding_idx, bool) or not isinstance(padding_idx, int):
                    raise TypeError(f"padding_idx must be None or an int, got {padding_idx!r}")
                if not -num_embeddings <= padding_idx < num_embeddings:
                    raise ValueError("padding_idx must be within num_embeddings")
                padding_idx %= num_embeddings
                if padding_idx % self.world_size == self.rank:
                    local_pad = padding_idx // self.world_size
            # The owner never pools (bags are pooled by the caller), so every shard is an Embedding.
            local = Embedding(routing.local_count(num_embeddings, self.rank, self.world_size), embedding_dim,
                                    padding_idx=local_pad, widths=local_widths, budget_bytes=budget_bytes, **kwargs)
        except RANK_ERRORS as e:
            error = e
        raise_together(error, self.group)
        self.local = local
        self.padding_idx = padding_idx
        self._num_embeddings = num_embeddings
        self._local_widths = local.widths  # the owner's widths, read per lookup; every layout call refreshes it

    # -- attributes -----------------------------------------------------------------------------
    @property
    def num_embeddings(self) -> int:
        return self._num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.local.embedding_dim

    @property
    def optimizer(self) -> Optional[str]:
        return self.local.optimizer

    @property
    def lr(self) -> float:
        return self.local.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.local.lr = value

    @property
    def step(self) -> int:
        return self.local.step

    def _gathered(self, part: Tensor) -> Tensor:
        """Every rank's `part` (one entry per local row), interleaved into global-id order (collective)."""
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, part, group=self.group)
        out = part.new_zeros((self._num_embeddings,) + tuple(part.shape[1:]))
        for rank, piece in enumerate(gathered):
            out[rank::self.world_size] = piece
        return out

    @property
    def widths(self) -> Tensor:
        """Every row's width, in global-id order (collective: gathers every rank's widths)."""
        return self._gathered(self._local_widths)

    @property
    def budget_bytes(self) -> Optional[int]:
        """This rank's budget."""
        return self.local.budget_bytes

    def set_budget(self, budget_bytes: Optional[int], *, optimizer=None) -> None:
        """Collective: each rank sets its own budget; if one rank cannot, every rank raises and none changes."""
        old = self.local.budget_bytes
        # Undo with the old budget: the rows fitted in it before.
        change_together(lambda: self.local.set_budget(budget_bytes, optimizer=optimizer),
                        lambda: self.local.set_budget(old, optimizer=optimizer), self.group)

    def memory_stats(self) -> dict:
        """Collective: a single table's keys, summed over the ranks (so code written for one table reads the
        total), plus "rank" (this rank's stats) and "ranks" (every rank's). In the total, budget_bytes is None if
        any rank is unbounded, largest_free_bytes and fragmentation are the worst rank's, bytes_per_element and
        bytes_per_row are the table's."""
        mine = self.local.memory_stats()
        ranks = [None] * self.world_size
        dist.all_gather_object(ranks, mine, group=self.group)
        total = {}
        for key, value in mine.items():
            values = [r[key] for r in ranks]
            if key in ("bytes_per_element", "bytes_per_row"):
                total[key] = value
            elif key in ("largest_free_bytes", "fragmentation"):
                total[key] = max(values)
            elif key == "budget_bytes":
                total[key] = None if any(v is None for v in values) else sum(values)
            else:
                total[key] = sum(values)
        return {**total, "rank": mine, "ranks": ranks}

    def to_dense(self) -> Tensor:
        """[num_embeddings, embedding_dim] of every row on every rank (collective; for tests and small tables)."""
        return self._gathered(self.local.to_dense())

    # -- lookups --------------------------------------------------------------------------------
    def _check_ids(self, ids: Tensor) -> Tensor:
        if not torch.is_tensor(ids):
            raise TypeError(f"input must be a tensor of indices, got {type(ids).__name__}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"indices must be int64 or int32, got {ids.dtype}")
        flat = ids.reshape(-1).to(torch.int64)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self._num_embeddings):
            bad = flat[(flat < 0) | (flat >= self._num_embeddings)][0]
            raise IndexError(f"index {int(bad)} is out of range for a table of {self._num_embeddings} rows")
        return flat

    def _rows(self, ids: Optional[Tensor], error: Optional[BaseException]) -> Tensor:
        """Rows of global ids `ids` (1-D int64, checked) as [len(ids), embedding_dim], zeros past each width, in
        the order of `ids`, differentiable into the owners' tables. A rank with `error` makes every rank raise."""
        world, group, d_max = self.world_size, self.group, self.embedding_dim
        if error is not None:
            ids = torch.zeros(0, dtype=torch.int64)
        dest = routing.owner(ids, world)
        order = torch.argsort(dest, stable=True)
        send_counts = torch.bincount(dest, minlength=world)
        recv_counts = exchange_counts(send_counts, error, group)  # raises on every rank if any rank's input is bad
        send_splits, recv_splits = send_counts.tolist(), recv_counts.tolist()
        # Ids out: local rows, grouped by owner.
        wanted = all_to_all(routing.local_row(ids[order], world), send_splits, recv_splits, group)
        # The owner looks them up (in the graph: its table's backward applies the gradient) and sends back
        # their widths, then their values at those widths.
        local_out = self.local(wanted)
        widths = self._local_widths[wanted]
        wire_dtype = torch.uint8 if d_max < 256 else torch.int32
        got_widths = all_to_all(widths.to(wire_dtype), recv_splits, send_splits, group).to(torch.int64)
        packed = local_out.reshape(-1).index_select(0, ragged_index(torch.arange(wanted.numel()) * d_max, widths))
        values = AllToAll.apply(packed, _segment_sums(widths, recv_counts), _segment_sums(got_widths, send_counts),
                                group)
        # Each value goes straight to its place in the caller's order (row order[k] of the output).
        places = ragged_index(order * d_max, got_widths)
        return values.new_zeros(ids.numel() * d_max).index_copy(0, places, values).view(ids.numel(), d_max)

    # -- layout ---------------------------------------------------------------------------------
    def _agreed(self, args) -> None:
        """Layout calls take the same arguments on every rank: a cheap checksum, compared across ranks, catches a
        rank that passed others (which would otherwise change the table differently per rank)."""
        total = torch.zeros(2, dtype=torch.float64)
        for k, a in enumerate(args):
            if torch.is_tensor(a):
                flat = a.reshape(-1).to(torch.float64)
                total += torch.stack([flat.sum(), (flat * torch.arange(1, flat.numel() + 1)).sum()]) * (k + 1)
            elif a is not None:
                total += float(a) * (k + 1)
        both = torch.stack([total, -total])
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)
        if not torch.equal(both[0], -both[1]):
            raise ValueError("a layout call got different arguments on different ranks; every rank must pass the "
                             "same global ids and widths")

    def _widths_arg(self, widths, count: int) -> Tensor:
        if isinstance(widths, bool):
            raise TypeError("widths must be an int or an integer tensor, not a bool")
        if isinstance(widths, int):
            return torch.full((count,), widths, dtype=torch.int64)
        widths = torch.as_tensor(widths)
        if widths.dtype not in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"widths must be integers, got {widths.dtype}")
        if widths.shape != (count,):
            raise ValueError(f"widths must be an int or have shape ({count},), got {tuple(widths.shape)}")
        return widths.to(torch.int64)

    def _fits(self, widths_after: Tensor) -> Optional[BaseException]:
        """The budget error this rank would raise with its rows at `widths_after`, or None. The arena compacts
        when it must, so a layout fits when its packed bytes plus the rows' metadata fit the budget."""
        budget = self.local.budget_bytes
        if budget is None:
            return None
        stats = self.local.memory_stats()
        rows = widths_after.numel()
        need = int(widths_after.sum()) * stats["bytes_per_element"] \
            + rows * (stats["bytes_per_row"] + METADATA_BYTES_PER_ROW)
        if need > budget:
            return BudgetExceededError(f"its rows would need {need} bytes (values, optimizer state, metadata), "
                                       f"its budget is {budget}; no rank changed")
        return None

    def _layout(self, args, plan, apply):
        """The shape of every layout call. `plan()` checks this rank's part and returns the widths its rows would
        have after it; errors and budgets are agreed on by every rank before any rank changes; `apply()` then
        changes this rank's table."""
        error = None
        try:
            self._agreed(args)
            widths_after = plan()
            error = self._fits(widths_after)
        except RANK_ERRORS as e:
            error = e
        raise_together(error, self.group)
        error, result = None, None
        try:
            result = apply()
        except RANK_ERRORS as e:  # the checks above are meant to make this unreachable
            error = RuntimeError(f"{type(e).__name__} after every rank agreed: {e}; the other ranks have changed "
                                 f"their rows")
        self._local_widths = self.local.widths
        raise_together(error, self.group)
        return result

    def _mine(self, ids) -> tuple[Tensor, Tensor]:
        """(mask of the ids this rank owns, their local rows), for a 1-D tensor of global ids."""
        flat = self._check_ids(ids)
        if torch.as_tensor(ids).dim() > 1:
            raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
        mask = routing.owner(flat, self.world_size) == self.rank
        return mask, routing.local_row(flat[mask], self.world_size)

    def resize(self, ids, widths, *, optimizer=None) -> None:
        """Global ids to new widths, on their owners (all-or-nothing on every rank; last entry of a repeated id
        wins, as in a single table)."""
        state = {}

        def plan():
            mask, local = self._mine(ids)
            w = self._widths_arg(widths, mask.numel())[mask]
            if w.numel() and (int(w.min()) < 0 or int(w.max()) > self.embedding_dim):
                raise ValueError(f"widths must be within 0..{self.embedding_dim}")
            state["args"] = (local, w.to(torch.int32))
            after = self._local_widths.to(torch.int64).numpy().copy()
            after[local.numpy()] = w.numpy()  # sequential assignment: the last entry of a repeated id wins
            return torch.from_numpy(after)

        self._layout((ids, widths), plan, lambda: self.local.resize(*state["args"], optimizer=optimizer))

    def set_widths(self, widths, *, optimizer=None) -> None:
        """Every row's width at once (a tensor of num_embeddings widths, or an int)."""
        state = {}

        def plan():
            w = self._widths_arg(widths, self._num_embeddings)
            if w.numel() and (int(w.min()) < 0 or int(w.max()) > self.embedding_dim):
                raise ValueError(f"widths must be within 0..{self.embedding_dim}")
            state["w"] = w[self.rank::self.world_size].to(torch.int32).contiguous()
            return state["w"]

        self._layout((widths,), plan, lambda: self.local.set_widths(state["w"], optimizer=optimizer))

    def append(self, widths, *, optimizer=None):
        """New rows at the end of the global vocabulary; returns their global id(s). Each goes to its owner."""
        state = {}

        def plan():
            count = 1 if isinstance(widths, int) and not isinstance(widths, bool) else torch.as_tensor(widths).numel()
            w = self._widths_arg(widths, count)
            if w.numel() and (int(w.min()) < 0 or int(w.max()) > self.embedding_dim):
                raise ValueError(f"widths must be within 0..{self.embedding_dim}")
            new_ids = torch.arange(self._num_embeddings, self._num_embeddings + count)
            state["ids"] = new_ids
            state["w"] = w[routing.owner(new_ids, self.world_size) == self.rank].to(torch.int32)
            return torch.cat([self._local_widths.to(torch.int64), state["w"].to(torch.int64)])

        def apply():
            if state["w"].numel():
                self.local.append(state["w"], optimizer=optimizer)
            self._num_embeddings += state["ids"].numel()

        self._layout((widths,), plan, apply)
        return int(state["ids"][0]) if isinstance(widths, int) else state["ids"]

    def release(self, ids, *, optimizer=None) -> None:
        """Free the storage of global ids (width 0; the ids stay valid)."""
        state = {}

        def plan():
            mask, local = self._mine(ids)
            state["local"] = local
            after = self._local_widths.clone()
            after[local] = 0
            return after

        self._layout((ids,), plan, lambda: self.local.release(state["local"], optimizer=optimizer))

    def compact(self, *, optimizer=None) -> None:
        """Defragment every rank's table."""
        self._layout((), lambda: self._local_widths, lambda: self.local.compact(optimizer=optimizer))

    # -- checkpoints (manifest.py saves and reshards) ------------------------------------------------
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False, *, match_rows: bool = True):
        """Collective: this rank's shard, as `state_dict()` gave it on the same number of ranks ("local." keys),
        all-or-nothing on every rank. For another number of ranks use `pyscall.distributed.load`."""
        prefix = "local."
        shard = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        manifest.load_shards(self, {self.rank: shard}, self.world_size, match_rows=match_rows)

    def extra_repr(self) -> str:
        return (f"{self._num_embeddings}, {self.embedding_dim}, rank={self.rank}/{self.world_size}, "
                f"local_rows={self.local.num_embeddings}")


class ShardedEmbedding(_ShardedTable):
    """`pyscall.Embedding` cut row-wise over a process group (see the module's docstring). Keywords as
    `pyscall.Embedding`'s; `widths` is the global widths (the same on every rank), `budget_bytes` this rank's."""

    def forward(self, input: Tensor) -> Tensor:
        error, ids = None, None
        try:
            ids = self._check_ids(input)
        except RANK_ERRORS as e:
            error = e
        rows = self._rows(ids, error)
        return rows.view(*input.shape, self.embedding_dim)


class ShardedEmbeddingBag(_ShardedTable):
    """`pyscall.EmbeddingBag` cut row-wise: rows come to the caller and are pooled there (torch's
    embedding_bag on the gathered rows), so its semantics are the single table's, include_last_offset and
    padding_idx included."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, mode: str = "mean",
                 include_last_offset: bool = False, padding_idx: Optional[int] = None, **kwargs):
        if mode not in _BAG_MODES:
            raise ValueError(f"mode must be one of {_BAG_MODES}, got {mode!r}")
        super().__init__(num_embeddings, embedding_dim, padding_idx, **kwargs)
        self.mode = mode
        self.include_last_offset = include_last_offset

    def _bags(self, input: Tensor, offsets: Optional[Tensor], per_sample_weights: Optional[Tensor]):
        """(ids, bag boundaries with the end included, weights or None), checked as the single table checks."""
        ids = self._check_ids(input)
        if input.dim() == 2:
            if offsets is not None:
                raise ValueError("if input is 2D, then offsets has to be None")
            length = input.shape[1]
            bounds = torch.arange(input.shape[0] + 1, dtype=torch.int64) * length
        elif input.dim() == 1:
            if not torch.is_tensor(offsets) or offsets.dim() != 1 or offsets.dtype not in (torch.int64, torch.int32):
                raise ValueError("offsets has to be a 1D int64 or int32 tensor when input is 1D")
            bounds = offsets.to(torch.int64)
            if not self.include_last_offset:
                bounds = torch.cat([bounds, bounds.new_full((1,), ids.numel())])
            if bounds.numel() and (int(bounds[0]) != 0 or bool((bounds[1:] < bounds[:-1]).any())
                                   or int(bounds[-1]) > ids.numel()):
                raise ValueError("offsets must start at 0, not decrease and stay within the input")
        else:
            raise ValueError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension {input.dim()}")
        if per_sample_weights is not None:
            if self.mode != "sum":
                raise NotImplementedError("per_sample_weights is only supported for mode='sum'")
            if not torch.is_tensor(per_sample_weights) or per_sample_weights.dtype != self.local.weight.dtype:
                raise TypeError(f"per_sample_weights must be a {self.local.weight.dtype} tensor")
            if per_sample_weights.shape != input.shape:
                raise ValueError(f"per_sample_weights has shape {tuple(per_sample_weights.shape)}, expected "
                                 f"{tuple(input.shape)}")
            per_sample_weights = per_sample_weights.reshape(-1)
        return ids, bounds, per_sample_weights

    def forward(self, input: Tensor, offsets: Optional[Tensor] = None,
                per_sample_weights: Optional[Tensor] = None) -> Tensor:
        error, ids, bounds, weights = None, None, None, None
        try:
            ids, bounds, weights = self._bags(input, offsets, per_sample_weights)
        except RANK_ERRORS as e:
            error = e
        # Only the ids inside a bag are fetched (pyscall's rule: ids past the last offset are in no bag).
        end = int(bounds[-1]) if bounds is not None and bounds.numel() else 0
        rows = self._rows(None if ids is None else ids[:end], error)
        # Pooled here by torch: row k of `rows` is input position k; padding_idx positions point at a zero row
        # that torch leaves out of the bag (and out of a mean's count), as a single table does.
        positions = torch.arange(end)
        if self.padding_idx is not None:
            positions = torch.where(ids[:end] == self.padding_idx, end, positions)
        rows = torch.cat([rows, rows.new_zeros(1, self.embedding_dim)])
        if bounds.numel() == 0:  # no bag at all (include_last_offset with no offsets)
            return rows[:0]
        return F.embedding_bag(positions, rows, bounds, mode=self.mode, include_last_offset=True,
                               per_sample_weights=None if weights is None else weights[:end], padding_idx=end)
