"""Long random operation sequences against a plain Python model of the rows.
(Over 400 lines: the model, the checked replays and the out-of-memory injection are shared by every test here.)"""
import contextlib
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from pyscall.arena import METADATA_BYTES_PER_ROW as META, RaggedArena
from pyscall.errors import BudgetExceededError

D_MAX = 12


class CheckedArena(RaggedArena):
    """Checks every plan before replaying it: unordered steps are independent,
    and ordered steps give the same rows when run out of place (the GPU rule)."""

    def _apply(self, plan, buffers):
        old = [b.detach().double().numpy().copy() for b in buffers]
        super()._apply(plan, buffers)
        for step in plan.steps:
            src, dst, copy, total = (np.asarray(x) for x in (step.src, step.dst, step.copy,
                                                           step.total))
            if not step.ordered:
                order = np.argsort(dst)
                assert np.all(dst[order][1:] >= (dst + total)[order][:-1])
                for k in range(len(src)):
                    hit = (dst[k] < src + copy) & (src < dst[k] + total[k]) & (copy > 0)
                    hit[k] = False
                    assert not hit.any(), "unordered step writes a source it reads"
        # Out-of-place replay of the whole plan must give the same rows.
        size = max(plan.capacity_after, old[0].size)
        for buf_old, buf_new in zip(old, buffers):
            work = np.concatenate([buf_old, np.zeros(size - buf_old.size)])
            for step in plan.steps:
                out = work.copy() if not step.ordered else np.full(size, np.nan)
                for s, d, c, t in zip(step.src, step.dst, step.copy, step.total):
                    seg = work[s:s + c].copy()
                    out[d:d + c] = seg
                    out[d + c:d + t] = 0
                work = out
            for o, w in zip(self.offsets.tolist(), self.widths.tolist()):
                np.testing.assert_array_equal(work[o:o + w], buf_new.detach().double().numpy()[o:o + w])


def cpu_move_rows(src_buf, dst_buf, src, dst, copy, total, *, validate=True):
    """The CUDA mover's semantics on CPU tensors (pyscall.cuda_move.move_rows): each move copies
    `copy` elements from src_buf[src:] to dst_buf[dst:] and zero-fills up to `total`."""
    for s_, d, c, t in zip(src.tolist(), dst.tolist(), copy.tolist(), total.tolist()):
        dst_buf[d:d + c] = src_buf[s_:s_ + c].clone()
        dst_buf[d + c:d + t] = 0


class DeviceReplayArena(CheckedArena):
    """Replays plans as a GPU table does (`pyscall.replay.CudaReplay`: ordered steps into new buffers, every
    re-layout journaled), on CPU tensors, with the mover stood in by `cpu_move_rows`."""

    def _replays_out_of_place(self):
        return True


@pytest.fixture
def cpu_mover():
    with mock.patch("pyscall.cuda_move.move_rows", cpu_move_rows):
        yield


def rand_init(numel, dtype, device):
    return torch.rand(numel, dtype=torch.float64).to(dtype) + 1.0


class Model:
    """rows[b][i]: the values of row i in buffer b (weight, states, companion)."""

    def __init__(self, widths, n_buffers, state_per_row):
        self.widths = list(widths)
        self.rows = [[np.zeros(w) for w in widths] for _ in range(n_buffers)]
        self.row_state = [np.zeros(len(widths)) for _ in range(state_per_row)]

    def set_width(self, i, w):
        for rows in self.rows:
            r = rows[i]
            rows[i] = np.concatenate([r[:w], np.zeros(max(0, w - r.size))])
        self.widths[i] = w


def check(arena, model, buffers, bpe, bpr):
    arena.validate()
    assert arena.widths.tolist() == model.widths
    for buf, rows in zip(buffers, model.rows):
        dense = arena.to_dense(buf).double().numpy()
        for i, r in enumerate(rows):
            np.testing.assert_array_equal(dense[i, :r.size], r)
            assert not dense[i, r.size:].any()
    for rs, want in zip(arena.row_state, model.row_state):
        np.testing.assert_array_equal(rs.double().numpy(), want)
    st_ = arena.memory_stats()
    assert st_["used_bytes"] == sum(model.widths) * bpe + len(model.widths) * bpr
    assert st_["total_width"] == sum(model.widths) and st_["num_rows"] == len(model.widths)
    assert st_["row_metadata_bytes"] == len(model.widths) * META
    if st_["budget_bytes"] is not None:
        assert st_["capacity_bytes"] + st_["row_metadata_bytes"] <= st_["budget_bytes"]


def scribble(arena, model, buffers, rng):
    """Training stand-in: new random values in every live position, mirrored in the model."""
    with torch.no_grad():
        for buf, rows in zip(buffers, model.rows):
            for i, (o, w) in enumerate(zip(arena.offsets.tolist(), arena.widths.tolist())):
                vals = rng.random(w) + 1.0
                buf[o:o + w] = torch.from_numpy(vals).to(buf.dtype)
                rows[i] = buf[o:o + w].double().numpy().copy()
        for rs, want in zip(arena.row_state, model.row_state):
            vals = rng.random(rs.numel()) + 1.0
            rs.copy_(torch.from_numpy(vals))
            want[:] = rs.double().numpy()


ops = st.sampled_from(["append", "resize", "resize", "resize_one", "set_widths", "release",
                       "compact"])


@pytest.mark.parametrize("arena_cls", [CheckedArena, DeviceReplayArena])
@pytest.mark.parametrize("state", [(0, 0), (2, 1)])
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_random_sequences_match_model(arena_cls, state, data, seed, cpu_mover):
    spe, spr = state
    rng = np.random.default_rng(seed)
    n0 = data.draw(st.integers(0, 40), label="rows")
    widths0 = rng.integers(0, D_MAX + 1, n0).tolist()
    bpe, bpr = 4 + spe * 4, spr * 4
    budget = None
    if data.draw(st.booleans(), label="budgeted"):
        budget = int((sum(widths0) + data.draw(st.integers(0, 200))) * bpe + (n0 + 10) * (bpr + META))
    arena = arena_cls(n0, D_MAX, widths0, state_per_element=spe, state_per_row=spr,
                         budget_bytes=budget, row_init=rand_init)
    companion = torch.zeros(arena.capacity, dtype=torch.float64)
    buffers = lambda: [arena.weight, *arena.state, companion]  # noqa: E731
    model = Model(widths0, 2 + spe, spr)
    model.rows[0] = [arena.to_dense()[i, :w].double().numpy() for i, w in enumerate(widths0)]
    check(arena, model, buffers(), bpe, bpr)
    for _ in range(data.draw(st.integers(1, 25), label="steps")):
        scribble(arena, model, buffers(), rng)
        op, n = data.draw(ops), len(model.widths)
        new_widths = list(model.widths)
        rows_after = n
        if op == "append":
            add = rng.integers(0, D_MAX + 1, rng.integers(0, 6)).tolist()
            new_widths += add
            rows_after += len(add)
            call = lambda: arena.append(add, companions=[companion])  # noqa: E731
        elif op in ("resize", "resize_one"):
            if n == 0:
                continue
            k = 1 if op == "resize_one" else int(rng.integers(1, n + 3))
            ids = rng.integers(0, n, k)
            ws = rng.integers(0, D_MAX + 1, k)
            for i, w in zip(ids, ws):  # last wins
                new_widths[i] = int(w)
            call = lambda: arena.resize(torch.from_numpy(ids), torch.from_numpy(ws),  # noqa: E731
                                        companions=[companion])
        elif op == "set_widths":
            new_widths = rng.integers(0, D_MAX + 1, n).tolist()
            call = lambda: arena.set_widths(new_widths, companions=[companion])  # noqa: E731
        elif op == "release":
            if n == 0:
                continue
            ids = rng.integers(0, n, rng.integers(1, 4))
            for i in ids:
                new_widths[i] = 0
            call = lambda: arena.release(ids, companions=[companion])  # noqa: E731
        else:
            call = lambda: arena.compact(companions=[companion])  # noqa: E731
        need = sum(new_widths) * bpe + rows_after * (bpr + META)
        if budget is not None and need > budget:
            with pytest.raises(BudgetExceededError):
                call()
        else:
            result = call()
            if op == "append":
                assert result.tolist() == list(range(n, rows_after))
                for w in add:
                    for rows in model.rows:
                        rows.append(np.zeros(w))
                    model.widths.append(w)
                for rs_i, rs in enumerate(model.row_state):
                    model.row_state[rs_i] = np.concatenate([rs, np.zeros(len(add))])
                # row init is random: take the weight values the arena chose, check they are set
                dense = arena.to_dense()
                for i in range(n, rows_after):
                    model.rows[0][i] = dense[i, :model.widths[i]].double().numpy()
                    assert bool((dense[i, :model.widths[i]] >= 1.0).all())
            else:
                for i, w in enumerate(new_widths):
                    if w != model.widths[i]:
                        model.set_width(i, w)
                if op == "release":
                    for rs in model.row_state:
                        rs[ids] = 0
            if op == "compact":
                assert arena.memory_stats()["fragmentation"] == 0
                assert arena.memory_stats()["free_bytes"] == 0
        check(arena, model, buffers(), bpe, bpr)


class _InjectedOOM(RuntimeError):
    pass


def _failing_after(fail_at: int):
    """Wraps allocators so that, counted across all of them, every call after the first fail_at
    raises _InjectedOOM."""
    calls = [0]

    def failing(allocate):
        def allocate_or_fail(*args, **kwargs):
            calls[0] += 1
            if calls[0] > fail_at:
                raise _InjectedOOM("injected: out of memory")
            return allocate(*args, **kwargs)
        return allocate_or_fail
    return failing


def _layout_of(arena, companion):
    """Everything an operation may change: metadata, statistics and every buffer, bit for bit
    (not the bytes of spare vector capacity and recycled plan storage the arena keeps)."""
    stats = {k: v for k, v in arena.memory_stats().items() if k not in ("metadata_bytes", "scratch_bytes")}
    return (arena.widths.tolist(), arena.offsets.tolist(), arena.capacity, stats,
            [b.detach().clone() for b in (arena.weight, *arena.state, companion, *arena.row_state)])


def _assert_same_layout(a, b):
    assert a[:4] == b[:4]
    assert len(a[4]) == len(b[4])
    for x, y in zip(a[4], b[4]):
        assert torch.equal(x, y)


@pytest.mark.parametrize("arena_cls", [RaggedArena, DeviceReplayArena])
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_out_of_memory_while_moving_data_changes_nothing(arena_cls, data, seed, cpu_mover):
    """An allocation that fails while an operation moves its data (the k-th buffer of the op)
    leaves the table exactly as it was, and the operation then runs as it would have: a twin
    arena that never failed makes the same layout decisions (so the free extents came back too)."""
    import pyscall.arena as arena_module
    rng = np.random.default_rng(seed)
    n0 = data.draw(st.integers(0, 30), label="rows")
    widths0 = rng.integers(0, D_MAX + 1, n0).tolist()
    budget = None
    if data.draw(st.booleans(), label="budgeted"):
        budget = int((sum(widths0) + data.draw(st.integers(0, 100))) * 12 + (n0 + 10) * (4 + META))
    init = lambda numel, dtype, device: torch.arange(1, numel + 1, dtype=dtype)  # noqa: E731
    arenas = [arena_cls(n0, D_MAX, widths0, state_per_element=2, state_per_row=1,
                        budget_bytes=budget, row_init=init) for _ in range(2)]
    companions = [torch.zeros(a.capacity, dtype=torch.float64) for a in arenas]
    real_buffer = arena_module._cpu_buffer
    for _ in range(data.draw(st.integers(1, 20), label="steps")):
        values = rng.random(arenas[0].capacity * 4 + arenas[0].num_rows) + 1.0
        for a, c in zip(arenas, companions):  # the same values in both twins
            with torch.no_grad():
                for k, buf in enumerate((a.weight, *a.state, c)):
                    buf.copy_(torch.from_numpy(values[k * a.capacity:(k + 1) * a.capacity]))
                a.row_state[0].copy_(torch.from_numpy(values[4 * a.capacity:]))
        op, n = data.draw(ops), arenas[0].num_rows
        if op == "append":
            args = (rng.integers(0, D_MAX + 1, rng.integers(0, 6)),)
        elif op in ("resize", "resize_one"):
            if n == 0:
                continue
            k = 1 if op == "resize_one" else int(rng.integers(1, n + 3))
            args = (rng.integers(0, n, k), rng.integers(0, D_MAX + 1, k))
        elif op == "set_widths":
            args = (rng.integers(0, D_MAX + 1, n),)
        elif op == "release":
            if n == 0:
                continue
            args = (rng.integers(0, n, rng.integers(1, 4)),)
        else:
            args = ()
        run = lambda a, c: getattr(a, op.replace("_one", ""))(*args, companions=[c])  # noqa: E731
        fail_at = data.draw(st.integers(0, 3), label="failing allocation")
        failing = _failing_after(fail_at)
        # The buffer allocations of a layout operation: _cpu_buffer on the CPU, torch.zeros / empty
        # in the device replay.
        patches = [mock.patch.object(arena_module, "_cpu_buffer", failing(real_buffer))] \
            if arena_cls is RaggedArena else \
            [mock.patch.object(arena_module.torch, "zeros", failing(torch.zeros)),
             mock.patch.object(arena_module.torch, "empty", failing(torch.empty))]
        before = _layout_of(arenas[0], companions[0])
        try:
            with contextlib.ExitStack() as stack:
                for p in patches:
                    stack.enter_context(p)
                run(arenas[0], companions[0])
            failed = False
        except _InjectedOOM:
            failed = True
        except BudgetExceededError:
            continue  # refused up front in both twins alike
        if failed:
            arenas[0].validate()
            _assert_same_layout(_layout_of(arenas[0], companions[0]), before)
            run(arenas[0], companions[0])
        run(arenas[1], companions[1])
        for a in arenas:
            a.validate()
        _assert_same_layout(_layout_of(arenas[0], companions[0]), _layout_of(arenas[1], companions[1]))
        for i, a in enumerate(arenas):  # companions follow the capacity
            if companions[i].numel() != a.capacity:
                raise AssertionError("companion did not follow the capacity")


@pytest.mark.parametrize("fail_at", range(7))
def test_out_of_memory_in_a_device_replay_of_several_steps_changes_nothing(fail_at, cpu_mover):
    # A resize whose first grow fits in place (an unordered step) and whose second needs the
    # compaction the budget forces (an ordered step): the device replay allocates the buffers of
    # both steps before either moves anything.
    import pyscall.arena as arena_module
    n = 64
    a = DeviceReplayArena(n, D_MAX, [4] * n, state_per_element=1, budget_bytes=4 * n * 8 + n * META,
                          row_init=rand_init)
    a.resize(list(range(0, 14, 2)), [2] * 7)  # 7 holes of 2 elements
    companion = torch.arange(a.capacity, dtype=torch.float64)
    a._arena.set_relayout_allocates(True)
    plan = a._arena.resize(np.array([0, 1]), np.array([4, 8], dtype=np.int32))
    assert [s.ordered for s in plan.steps] == [False, True]
    a._arena.undo()
    before = _layout_of(a, companion)
    failing = _failing_after(fail_at)
    with mock.patch.object(arena_module.torch, "empty", failing(torch.empty)), \
            mock.patch.object(arena_module.torch, "zeros", failing(torch.zeros)):
        try:
            a.resize([0, 1], [4, 8], companions=[companion])
            failed = False
        except _InjectedOOM:
            failed = True
    a.validate()
    if failed:
        _assert_same_layout(_layout_of(a, companion), before)
    else:
        assert a.widths[:2].tolist() == [4, 8]
    assert failed == (fail_at < 3)  # the spare weight, state and companion buffers


# ---- many random operations, valid and invalid ----------------------------------------------------------
# A seeded loop rather than hypothesis: at least 10,000 operations a default run (4 configurations x 2,600),
# each followed by validate() and a comparison with a model of the rows; a call that raises must leave
# widths, offsets, capacity, statistics and every buffer bit for bit as they were.
OPS_PER_CONFIG = 2600
BAD = object()  # marks an invalid call in _random_call


def _state(arena, companion):
    stats = {k: v for k, v in arena.memory_stats().items() if k not in ("metadata_bytes", "scratch_bytes")}
    return (arena.widths.tolist(), arena.offsets.tolist(), arena.capacity, stats,
            [b.detach().clone() for b in (arena.weight, *arena.state, companion, *arena.row_state)])


def _dense_rows(arena, companion):
    """Every buffer laid out like the weight, as [num_rows, d_max] with zeros past the widths."""
    return [arena.to_dense(b) for b in (arena.weight, *arena.state, companion)]


def _random_call(arena, companion, rng, budget_of):
    """(name, call, expected exception or None, new widths or None). `budget_of(widths)`: bytes they need."""
    n, d = arena.num_rows, arena.d_max
    comps = [companion]
    kind = rng.choice(["append", "resize", "resize", "set_widths", "release", "compact", "budget", "bad_companion"])
    bad = rng.random() < 0.35
    if kind == "append":
        add = rng.integers(0, d + 1, rng.integers(0, 5))
        if bad:
            variant = rng.integers(0, 3)
            if variant == 0 and add.size:
                add[rng.integers(0, add.size)] = rng.choice([-1, d + 1, 2**31])
                # The new rows' metadata is checked first, before their widths are read (or copied).
                budget = arena.budget_bytes
                rows_fit = budget is None or budget_of(arena.widths.tolist() + [0] * add.size) <= budget
                return kind, lambda: arena.append(add, companions=comps), \
                    ValueError if rows_fit else BudgetExceededError, None
            if variant == 1 and add.size:  # (an empty list is an empty list, whatever numpy's dtype for it)
                return kind, lambda: arena.append(add.astype(np.float32) + 0.5, companions=comps), TypeError, None
            return kind, lambda: arena.append(torch.ones(3, dtype=torch.bool), companions=comps), TypeError, None
        new = arena.widths.tolist() + add.tolist()
        return kind, lambda: arena.append(add, companions=comps), None, new
    if kind in ("resize", "release") and n == 0:
        kind = "compact"
    if kind == "resize":
        k = int(rng.integers(1, n + 3))
        ids, ws = rng.integers(0, n, k), rng.integers(0, d + 1, k)
        if bad:
            variant = rng.integers(0, 4)
            if variant == 0:
                ids[rng.integers(0, k)] = rng.choice([-1, n, n + 7])
                return kind, lambda: arena.resize(ids, ws, companions=comps), IndexError, None
            if variant == 1:
                ws[rng.integers(0, k)] = rng.choice([-3, d + 1])
                return kind, lambda: arena.resize(ids, ws, companions=comps), ValueError, None
            if variant == 2:
                return kind, lambda: arena.resize(ids, ws[:-1], companions=comps), ValueError, None
            return kind, lambda: arena.resize(ids.astype(np.float64), ws, companions=comps), TypeError, None
        new = arena.widths.tolist()
        for i, w in zip(ids, ws):  # last wins
            new[i] = int(w)
        return kind, lambda: arena.resize(torch.from_numpy(ids), torch.from_numpy(ws), companions=comps), None, new
    if kind == "set_widths":
        ws = rng.integers(0, d + 1, n)
        if bad:
            if rng.random() < 0.5:
                return kind, lambda: arena.set_widths(np.append(ws, 1), companions=comps), ValueError, None
            ws = ws.copy()
            if n:
                ws[rng.integers(0, n)] = d + 1
                return kind, lambda: arena.set_widths(ws, companions=comps), ValueError, None
        return kind, lambda: arena.set_widths(ws, companions=comps), None, ws.tolist()
    if kind == "release":
        ids = rng.integers(0, n, rng.integers(1, 4))
        if bad:
            ids[0] = rng.choice([-1, n])
            return kind, lambda: arena.release(ids, companions=comps), IndexError, None
        new = arena.widths.tolist()
        for i in ids:
            new[i] = 0
        return kind, lambda: arena.release(ids, companions=comps), None, new
    if kind == "budget":
        need = budget_of(arena.widths.tolist())
        if bad:
            value = [True, -1, 2**64, 1.5][rng.integers(0, 4)]
            error = TypeError if isinstance(value, (bool, float)) else ValueError
            return kind, lambda: arena.set_budget(value), error, None
        value = None if rng.random() < 0.2 else int(need + rng.integers(-need // 4 - 1, 400))
        error = BudgetExceededError if value is not None and value < need else None
        return kind, lambda: arena.set_budget(value, companions=comps), error, arena.widths.tolist()
    if kind == "bad_companion":
        return kind, lambda: arena.compact(companions=[torch.zeros(arena.capacity + 1)]), ValueError, None
    return kind, lambda: arena.compact(companions=comps), None, arena.widths.tolist()


@pytest.mark.parametrize("config", [
    dict(seed=1, spe=0, spr=0, budgeted=False), dict(seed=2, spe=2, spr=1, budgeted=True),
    dict(seed=3, spe=1, spr=0, budgeted=True), dict(seed=4, spe=0, spr=1, budgeted=True)])
def test_ten_thousand_random_operations_valid_and_invalid(config):
    rng = np.random.default_rng(config["seed"])
    spe, spr = config["spe"], config["spr"]
    bpe, bpr = 4 + 4 * spe, 4 * spr
    n0 = int(rng.integers(0, 30))
    widths0 = rng.integers(0, D_MAX + 1, n0)
    budget_of = lambda ws: sum(ws) * bpe + len(ws) * (bpr + META)  # noqa: E731
    budget = budget_of(widths0.tolist()) + 300 if config["budgeted"] else None
    arena = RaggedArena(n0, D_MAX, widths0, state_per_element=spe, state_per_row=spr, budget_bytes=budget,
                        row_init=rand_init)
    companion = torch.rand(arena.capacity, dtype=torch.float64)
    counts = {"ok": 0, "refused": 0}
    for step in range(OPS_PER_CONFIG):
        if step % 50 == 0:  # training stand-in: new values everywhere
            with torch.no_grad():
                for b in (arena.weight, *arena.state, companion, *arena.row_state):
                    b.copy_(torch.rand(b.numel(), dtype=torch.float64) + 1.0)
        before = _state(arena, companion)
        dense = _dense_rows(arena, companion)
        kind, call, error, new_widths = _random_call(arena, companion, rng, budget_of)
        budget = arena.budget_bytes
        if error is None and kind != "budget" and budget is not None and budget_of(new_widths) > budget:
            error = BudgetExceededError
        if error is not None:
            with pytest.raises(error):
                call()
            counts["refused"] += 1
            arena.validate()
            _assert_same_layout(_state(arena, companion), before)
            continue
        call()
        counts["ok"] += 1
        arena.validate()
        assert arena.widths.tolist() == new_widths, kind
        stats = arena.memory_stats()
        assert stats["total_width"] == sum(new_widths)
        if stats["budget_bytes"] is not None:
            assert stats["capacity_bytes"] + stats["row_metadata_bytes"] <= stats["budget_bytes"]
        after = _dense_rows(arena, companion)
        old_n = len(before[0])
        keep = torch.tensor([min(a, b) for a, b in zip(before[0], new_widths[:old_n])], dtype=torch.int64)
        mask = torch.arange(D_MAX)[None, :] < keep[:, None]
        for b_old, b_new in zip(dense, after):  # kept values bit for bit, grown positions zero
            assert torch.equal(b_new[:old_n][mask], b_old[mask]), kind
            assert not b_new[:old_n][~mask].any(), kind
        for b_new in after[1:]:  # appended rows: state and companion start at zero
            assert not b_new[old_n:].any()
    assert counts["ok"] + counts["refused"] == OPS_PER_CONFIG
    assert counts["refused"] > OPS_PER_CONFIG // 5 and counts["ok"] > OPS_PER_CONFIG // 3, counts
