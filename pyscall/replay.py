"""The two executors of a layout plan (csrc/arena/plan.h): the C++ arena decides how the rows move (plan.replay:
in_place, grow, trim or fresh; the capacities; which per-row state is new or reset); an executor allocates what the
plan needs while the arena still holds the old metadata (`prepare`, which may raise and then changes nothing), and
after the arena commits it moves the rows (`replay`). CpuReplay runs the C++ movers in place or into new buffers;
CudaReplay runs the CUDA mover (pyscall.cuda_move), ordered steps into spare buffers since it cannot run them in
place."""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from . import _C


class Prepared(NamedTuple):
    new: list        # buffers of the new capacity, one per flat buffer (grow, trim, fresh), else []
    spare: list      # CUDA: a buffer per flat buffer for ordered steps
    moves: list      # CUDA: each step's (src, dst, copy, total) on the device
    row_state: list  # per-row state of the rows after the operation (new rows at 0), or [] when rows stay


def _grown_row_state(plan, row_state: list) -> list:
    new_rows = plan.rows_after - plan.rows_before
    return [torch.cat([rs, rs.new_zeros(new_rows)]) for rs in row_state] if new_rows else []


def _finish_row_state(plan, row_state: list, grown: list) -> None:
    for rs, g in zip(row_state, grown):
        rs.data = g
    if len(plan.reset_rows):
        index = torch.from_numpy(plan.reset_rows)
        for rs in row_state:
            rs[index.to(rs.device)] = 0


def _grow_into(buffers: list, grown: list, old: int) -> None:
    """Each buffer takes its grown one: its values first, zeros after them (free space stays defined for
    whole-buffer optimizers)."""
    for b, g in zip(buffers, grown):
        g[:old] = b.data
        g[old:] = 0
        b.data = g


def _trim_into(buffers: list, trimmed: list, new: int) -> None:
    for b, t in zip(buffers, trimmed):
        t.copy_(b.data[:new])
        b.data = t


def _pointers(buffers: list) -> list:
    return [(b.data_ptr(), b.element_size(), b.numel()) for b in buffers]


class CpuReplay:
    """On host buffers. `allocate(numel, dtype)` gives an unwritten buffer (pyscall.arena's, on huge pages)."""

    def __init__(self, allocate: Callable[[int, torch.dtype], torch.Tensor]):
        self.allocate = allocate

    def prepare(self, plan, buffers: list, row_state: list) -> Prepared:
        new = [] if plan.replay == "in_place" else [self.allocate(plan.capacity_after, b.dtype) for b in buffers]
        return Prepared(new, [], [], _grown_row_state(plan, row_state))

    def replay(self, plan, buffers: list, prepared: Prepared, row_state: list) -> None:
        threads = torch.get_num_threads()
        if plan.replay == "fresh":  # a re-layout at a new capacity: the rows move once, into the new buffers
            _C.apply_relayout_cpu(plan, _pointers(buffers), _pointers(prepared.new), threads)
            for b, f in zip(buffers, prepared.new):
                f[plan.used_after:] = 0
                b.data = f
        else:
            if plan.replay == "grow":
                _grow_into(buffers, prepared.new, plan.capacity_before)
            if plan.steps:
                _C.apply_plan_cpu(plan, _pointers(buffers), threads)
            if plan.replay == "trim":
                _trim_into(buffers, prepared.new, plan.capacity_after)
        _finish_row_state(plan, row_state, prepared.row_state)


class CudaReplay:
    """On device buffers: unordered steps in place, ordered ones out of place."""

    @staticmethod
    def _relayout_only(plan) -> bool:
        return len(plan.steps) == 1 and plan.steps[0].ordered

    def prepare(self, plan, buffers: list, row_state: list) -> Prepared:
        device = buffers[0].device if buffers else torch.device("cpu")
        old, new = plan.capacity_before, plan.capacity_after
        moves = [[torch.from_numpy(a).to(device, non_blocking=False) for a in (s.src, s.dst, s.copy, s.total)]
                 for s in plan.steps]
        rows = _grown_row_state(plan, row_state)
        if self._relayout_only(plan):  # one re-layout: straight into buffers of the new capacity
            return Prepared([torch.zeros(new, dtype=b.dtype, device=device) for b in buffers], [], moves, rows)
        # An ordered step moves into a spare buffer; the buffer it leaves is the next one's spare.
        spare = [torch.empty(max(old, new), dtype=b.dtype, device=device) for b in buffers] \
            if any(s.ordered for s in plan.steps) else []
        resized = [torch.empty(new, dtype=b.dtype, device=device) for b in buffers] if new != old else []
        return Prepared(resized, spare, moves, rows)

    def replay(self, plan, buffers: list, prepared: Prepared, row_state: list) -> None:
        from .cuda_move import move_rows
        old, new = plan.capacity_before, plan.capacity_after
        if self._relayout_only(plan):
            for b, f in zip(buffers, prepared.new):
                move_rows(b.data, f, *prepared.moves[0])
                b.data = f
        else:
            if new > old:
                _grow_into(buffers, prepared.new, old)
            spare = list(prepared.spare)
            for step, m in zip(plan.steps, prepared.moves):
                for i, b in enumerate(buffers):
                    if step.ordered:
                        spare[i].zero_()
                        move_rows(b.data, spare[i], *m)
                        spare[i], b.data = b.data, spare[i]
                    else:
                        move_rows(b.data, b.data, *m)
            if new < old:
                _trim_into(buffers, prepared.new, new)
        _finish_row_state(plan, row_state, prepared.row_state)
