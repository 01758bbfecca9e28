"""RaggedArena semantics, budget, bad input, and the in-place/parallel plan replay.
(Over 400 lines: one test per documented semantic of pyscall/arena.py, in the order of its docstring.)"""
import sys

import numpy as np
import pytest
import torch

from pyscall import _C
from pyscall.arena import METADATA_BYTES_PER_ROW as META, RaggedArena
from pyscall.errors import BudgetExceededError


def randn_init(numel, dtype, device):
    return torch.randn(numel, dtype=torch.float64).to(dtype=dtype, device=device) + 3.0


def make(widths, d_max=8, **kw):
    kw.setdefault("row_init", randn_init)
    return RaggedArena(len(widths), d_max, widths, **kw)


def randomize_state(a):
    for s in a.state:
        s.copy_(torch.randn(s.numel(), dtype=torch.float64).to(s.dtype))
    for rs in a.row_state:
        rs.copy_(torch.rand(rs.numel(), dtype=torch.float64).to(rs.dtype) + 1.0)


def snapshot(a, companions=()):
    return dict(weight=a.weight.clone(), state=[s.clone() for s in a.state],
                row_state=[r.clone() for r in a.row_state],
                comp=[c.clone() for c in companions], offsets=a.offsets.clone(),
                widths=a.widths.clone(), stats=a.memory_stats(), capacity=a.capacity)


def assert_same(before, after):
    for key in before:
        b, c = before[key], after[key]
        if isinstance(b, list):
            assert len(b) == len(c)
            for x, y in zip(b, c):
                assert torch.equal(x, y), key
        elif isinstance(b, torch.Tensor):
            assert torch.equal(b, c), key
        else:
            assert b == c, key


def bits(t):
    return t.view(torch.int32) if t.dtype == torch.float32 else t


# ---- semantics ------------------------------------------------------------
def test_construction_default_widths_and_row_init():
    a = RaggedArena(5, 4)
    assert a.widths.tolist() == [4] * 5 and a.capacity == 20
    assert torch.equal(a.weight, torch.zeros(20))
    b = make([3, 0, 2])
    assert b.widths.tolist() == [3, 0, 2] and b.capacity == 5
    assert bool((b.weight != 0).all())
    b.validate()


def test_shrink_keeps_prefix_bit_for_bit_and_grow_zero_fills():
    torch.manual_seed(0)
    a = make([5, 3, 8, 1, 6], state_per_element=2, state_per_row=1)
    randomize_state(a)
    dense = [a.to_dense(b) for b in [a.weight, *a.state]]
    row_state = a.row_state[0].clone()
    a.resize([0, 1, 2, 3], [2, 7, 8, 0])  # shrink, grow, same, release-by-resize
    a.validate()
    assert a.widths.tolist() == [2, 7, 8, 0, 6]
    for before, buf in zip(dense, [a.weight, *a.state]):
        after = a.to_dense(buf)
        assert torch.equal(bits(after[0, :2]), bits(before[0, :2]))
        assert torch.equal(bits(after[1, :3]), bits(before[1, :3]))
        assert torch.equal(after[1, 3:], torch.zeros(5))
        assert torch.equal(bits(after[2]), bits(before[2]))
        assert torch.equal(after[3], torch.zeros(8))
        assert torch.equal(bits(after[4]), bits(before[4]))
    assert torch.equal(a.row_state[0], row_state)  # per-row state is per id: untouched


def test_append_row_init_zero_state_and_ids():
    a = make([2, 2], state_per_element=1, state_per_row=1)
    randomize_state(a)
    ids = a.append([3, 0, 4])
    assert ids.dtype == torch.int64 and ids.tolist() == [2, 3, 4]
    assert a.append(1).tolist() == [5]
    a.validate()
    dense_w, dense_s = a.to_dense(), a.to_dense(a.state[0])
    assert bool((dense_w[2, :3] != 0).all()) and bool((dense_w[4, :4] != 0).all())
    assert torch.equal(dense_s[2:], torch.zeros(4, 8))
    assert torch.equal(a.row_state[0][2:], torch.zeros(4))


def test_release_frees_storage_and_zeroes_row_state():
    a = make([4, 4, 4], state_per_row=1)
    randomize_state(a)
    a.release([1])
    a.validate()
    st = a.memory_stats()
    assert a.widths.tolist() == [4, 0, 4]
    assert st["used_bytes"] == 8 * 4 + 3 * 4 and st["free_bytes"] == 16
    assert a.row_state[0][1] == 0 and bool((a.row_state[0][[0, 2]] > 0).all())


def test_compact_packs_and_trims():
    a = make([4, 5, 6, 7])
    before = a.to_dense()
    a.resize([0, 2], [1, 2])
    assert a.memory_stats()["free_bytes"] > 0
    a.compact()
    a.validate()
    st = a.memory_stats()
    assert st["fragmentation"] == 0 and st["free_bytes"] == 0 and a.capacity == 1 + 5 + 2 + 7
    after = a.to_dense()
    assert torch.equal(after[1], before[1]) and torch.equal(after[3], before[3])


def test_set_widths_trims_capacity_and_keeps_values():
    a = make([4, 5, 6, 7], state_per_element=1)
    randomize_state(a)
    before_w, before_s = a.to_dense(), a.to_dense(a.state[0])
    a.set_widths(torch.tensor([8, 0, 3, 7], dtype=torch.int32))
    a.validate()
    assert a.capacity == 18 and a.memory_stats()["fragmentation"] == 0
    for before, after in [(before_w, a.to_dense()), (before_s, a.to_dense(a.state[0]))]:
        assert torch.equal(after[0, :4], before[0, :4]) and torch.equal(after[0, 4:], torch.zeros(4))
        assert torch.equal(after[1], torch.zeros(8))
        assert torch.equal(after[2, :3], before[2, :3]) and torch.equal(after[3], before[3])


def test_duplicate_ids_last_wins():
    a, b = make([3, 3, 3]), make([3, 3, 3])
    b.weight.copy_(a.weight)
    a.resize([1, 0, 1, 1], [8, 2, 0, 5])
    b.resize([0, 1], [2, 5])
    assert a.widths.tolist() == b.widths.tolist() == [2, 5, 3]
    assert torch.equal(a.to_dense(), b.to_dense())


def test_companions_move_like_state_and_are_not_budgeted():
    a = make([3, 5, 2], budget_bytes=12 * 4 + 3 * META)
    comp = torch.randn(a.capacity, dtype=torch.float64)
    before = a.to_dense(comp)
    a.resize([0, 2], [5, 1], companions=[comp])  # grows capacity: comp grows in place too
    assert comp.numel() == a.capacity
    after = a.to_dense(comp)
    assert torch.equal(after[0, :3], before[0, :3]) and torch.equal(after[0, 3:], torch.zeros(5))
    assert torch.equal(after[1], before[1]) and torch.equal(after[2, :1], before[2, :1])
    with pytest.raises(ValueError, match="capacity"):
        a.resize([0], [1], companions=[torch.zeros(3)])


def test_parameter_identity_survives_reallocation():
    a = make([2, 2])
    a.weight = torch.nn.Parameter(a.weight)
    p = a.weight
    a.append([8, 8])
    a.set_widths([1, 1, 1, 1])
    assert a.weight is p and p.numel() == a.capacity == 4


# ---- budget ------------------------------------------------------------------
def test_resize_that_fits_only_after_compaction_succeeds():
    n = 64  # 7 ids < n/8: the per-row path, which must fall back to compaction
    a = make([4] * n, state_per_element=1, budget_bytes=4 * n * 8 + n * META)
    randomize_state(a)
    a.resize(list(range(0, 14, 2)), [2] * 7)  # 14 free elements in 7 holes of 2
    before = [a.to_dense(b) for b in [a.weight, a.state[0]]]
    assert a.memory_stats()["largest_free_bytes"] == 2 * 8 and a.capacity == 4 * n
    a.resize([1], [8])  # needs 4 more contiguous elements: only a compaction gives them
    a.validate()
    assert a.capacity == 4 * n and a.widths[1] == 8
    for b, buf in zip(before, [a.weight, a.state[0]]):
        after = a.to_dense(buf)
        assert torch.equal(after[1, :4], b[1, :4]) and torch.equal(after[1, 4:], torch.zeros(4))
        keep = [i for i in range(n) if i != 1]
        assert torch.equal(after[keep], b[keep])


@pytest.mark.parametrize("op", ["append", "resize", "set_widths", "append_rows_only"])
def test_budget_failure_changes_nothing(op):
    a = make([4, 3, 5, 2], state_per_element=2, state_per_row=1,
             budget_bytes=14 * 12 + 4 * (4 + META) + 8)
    randomize_state(a)
    comp = torch.randn(a.capacity)
    a.resize([1], [1], companions=[comp])  # leave a hole, so the stats are not trivial
    before = snapshot(a, [comp])
    with pytest.raises(BudgetExceededError, match="budget_bytes"):
        if op == "append":
            a.append([3], companions=[comp])
        elif op == "resize":
            a.resize([0, 1], [8, 1], companions=[comp])
        elif op == "set_widths":
            a.set_widths([4, 4, 4, 4], companions=[comp])
        else:
            a.append([0] * 9, companions=[comp])  # per-row state and metadata alone cross the budget
    assert_same(before, snapshot(a, [comp]))
    a.validate()


def test_uniform_width_holds_exactly_while_the_layout_is_uniform():
    """uniform_width lets the CPU kernels skip the metadata, so it must never claim a layout the rows
    do not have; a re-layout finds it again."""
    a = make([8] * 6)
    assert a.uniform_width == 8
    a.append([8, 8])  # same width at the next offsets
    assert a.uniform_width == 8
    a.resize([3], [4])
    assert a.uniform_width == 0
    a.resize([3], [8])
    a.compact()
    assert a.uniform_width == 8
    a.release([0])
    assert a.uniform_width == 0
    a.set_widths(np.full(a.num_rows, 5))
    assert a.uniform_width == 5
    a.append([3])
    assert a.uniform_width == 0
    assert make([2, 3]).uniform_width == 0 and make([0, 0]).uniform_width == 0
    a.validate()


def test_undo_and_with_layout_restore_the_uniform_width():
    a = _C.Arena(8, 4, 0, -1)
    a.set_relayout_allocates(True)
    a.append(np.full(10, 8, dtype=np.int32))
    a.commit()
    for op in (lambda: a.resize(np.array([2]), np.array([3], dtype=np.int32)),
               lambda: a.set_widths(np.full(10, 3, dtype=np.int32)),
               lambda: a.release(np.array([9]))):
        op()
        assert a.uniform_width in (0, 3)
        a.undo()
        assert a.uniform_width == 8
        a.validate()
    assert _C.Arena.with_layout(*a.layout_state()).uniform_width == 8


def _metadata(arena):
    stats = arena.stats()
    return arena.offsets.tolist(), arena.widths.tolist(), arena.capacity, arena.used, \
        {k: stats[k] for k in ("free_bytes", "largest_free_bytes", "free_extents", "fragmentation")}


@pytest.mark.parametrize("op", ["append", "resize_few", "resize_many", "set_widths", "release", "compact"])
def test_arena_undo_reverts_each_operation(op):
    # The journal the module uses when a buffer cannot be allocated: with every re-layout treated
    # as allocating (as on a GPU), each operation is undone exactly, free extents included.
    rng = np.random.default_rng(3)
    a = _C.Arena(16, 4, 0, -1)
    a.set_relayout_allocates(True)
    a.append(rng.integers(0, 17, 50).astype(np.int32))
    a.release(np.arange(0, 50, 3))
    a.resize(np.arange(1, 50, 10), np.full(5, 16, dtype=np.int32))  # fragments the free space
    assert a.stats()["free_extents"] > 1
    a.commit()
    before = _metadata(a)
    {"append": lambda: a.append(rng.integers(0, 17, 7).astype(np.int32)),
     "resize_few": lambda: a.resize(np.array([2, 4, 4]), np.array([16, 1, 9], dtype=np.int32)),
     "resize_many": lambda: a.resize(np.arange(50), rng.integers(0, 17, 50).astype(np.int32)),
     "set_widths": lambda: a.set_widths(rng.integers(0, 17, 50).astype(np.int32)),
     "release": lambda: a.release(np.array([1, 5, 7])),
     "compact": lambda: a.compact()}[op]()
    assert _metadata(a) != before
    a.undo()
    assert _metadata(a) == before
    a.validate()
    a.undo()  # once undone (or committed), undo does nothing
    assert _metadata(a) == before


def test_arena_undo_refuses_an_in_place_relayout():
    # On the CPU a re-layout at the capacity the operation started with runs in place and
    # allocates nothing, so the arena keeps no copy for it and cannot undo it.
    a = _C.Arena(8, 4, 0, -1)
    a.append(np.array([3, 5, 2], dtype=np.int32))
    a.resize(np.array([1]), np.array([1], dtype=np.int32))
    a.commit()
    a.compact()  # trims capacity: undoable
    a.undo()
    a.set_widths(np.array([3, 4, 2], dtype=np.int32))  # 9 of 10 elements: keeps the capacity
    with pytest.raises(RuntimeError, match="cannot be undone"):
        a.undo()


def test_budget_error_is_runtime_error_and_raised_by_constructor():
    assert issubclass(BudgetExceededError, RuntimeError)
    with pytest.raises(BudgetExceededError):
        RaggedArena(4, 8, budget_bytes=4 * 8 * 4 + 4 * META - 1)
    RaggedArena(4, 8, budget_bytes=4 * 8 * 4 + 4 * META).validate()


# ---- bad input -------------------------------------------------------------
@pytest.mark.parametrize("call, exc", [
    (lambda a: a.resize([0], [-1]), ValueError),
    (lambda a: a.resize([0], [9]), ValueError),
    (lambda a: a.resize([0, 1], [1, 2, 3]), ValueError),
    (lambda a: a.resize([4], [1]), IndexError),
    (lambda a: a.resize([-1], [1]), IndexError),
    (lambda a: a.resize(torch.tensor([0.0]), [1]), TypeError),
    (lambda a: a.resize([0], torch.tensor([1.0])), TypeError),
    (lambda a: a.resize([0], [1.5]), TypeError),
    (lambda a: a.resize(torch.tensor([True]), [1]), TypeError),
    (lambda a: a.resize([0], [2**40]), ValueError),
    (lambda a: a.set_widths([1, 2, 3]), ValueError),
    (lambda a: a.set_widths([1, 2, 3, 9]), ValueError),
    (lambda a: a.set_widths(torch.ones(4)), TypeError),
    (lambda a: a.append([-2]), ValueError),
    (lambda a: a.append(torch.tensor([1.0])), TypeError),
    (lambda a: a.release([7]), IndexError),
    (lambda a: a.release([-3]), IndexError),
    (lambda a: a.release(np.array([0.0])), TypeError),
])
def test_bad_input_raises_and_changes_nothing(call, exc):
    a = make([4, 3, 5, 2], state_per_element=1, state_per_row=1)
    randomize_state(a)
    before = snapshot(a)
    with pytest.raises(exc):
        call(a)
    assert_same(before, snapshot(a))


def test_bad_constructor_arguments():
    with pytest.raises(TypeError):
        RaggedArena(2, 4, dtype=torch.int32)
    with pytest.raises(ValueError):
        RaggedArena(2, 4, state_per_element=3)
    with pytest.raises(ValueError):
        RaggedArena(2, 4, [1, 2, 3])
    with pytest.raises(ValueError):
        RaggedArena(2, 4, [1, 5])


def test_int32_and_int64_inputs_agree():
    a, b = make([3, 3, 3]), make([3, 3, 3])
    a.resize(torch.tensor([2, 0], dtype=torch.int32), torch.tensor([7, 1], dtype=torch.int32))
    b.resize(torch.tensor([2, 0]), torch.tensor([7, 1]))
    assert a.widths.tolist() == b.widths.tolist() == [1, 3, 7]


# ---- plan replay: in place, out of place, parallel -----------------------
def scrambled_arena(n, d_max, seed):
    """A _C.Arena whose rows are out of id order with holes, plus logical row values."""
    rng = np.random.default_rng(seed)
    arena = _C.Arena(d_max, 8, 0, -1)
    buf = np.full(0, np.nan)

    def replay(plan):
        nonlocal buf
        if plan.capacity_after > buf.size:
            buf = np.concatenate([buf, np.full(plan.capacity_after - buf.size, np.nan)])
        _C.apply_plan_cpu(plan, [(buf.ctypes.data, 8, buf.size)], 1)
        buf = buf[:plan.capacity_after].copy()

    replay(arena.append(rng.integers(0, d_max + 1, n)))
    buf[:] = rng.standard_normal(buf.size)
    for _ in range(4):  # single-row style batches relocate rows out of order
        ids = rng.choice(n, n // 10, replace=False)
        replay(arena.resize(ids, rng.integers(0, d_max + 1, ids.size)))
    return arena, buf, rng


def rows_of(arena, buf):
    return [buf[o:o + w].copy() for o, w in zip(arena.offsets, arena.widths)]


def expected_after(rows, widths):
    return [np.concatenate([r[:w], np.zeros(max(0, w - r.size))]) for r, w in zip(rows, widths)]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_relayout_in_place_parallel_and_out_of_place_agree(threads):
    arena, buf, rng = scrambled_arena(20000, 24, seed=threads)
    rows = rows_of(arena, buf)
    assert not np.all(np.diff(arena.offsets[arena.widths > 0]) > 0)  # really scrambled
    new_widths = rng.integers(0, 25, arena.num_rows)
    plan = arena.set_widths(new_widths)
    (step,) = plan.steps
    assert step.ordered and len(step) == np.count_nonzero(new_widths)
    work = np.concatenate([buf, np.full(max(0, plan.capacity_after - buf.size), np.nan)])
    fresh = np.full(work.size, np.nan)
    for s, d, c, t in zip(step.src, step.dst, step.copy, step.total):  # the GPU rule
        fresh[d:d + c] = work[s:s + c]
        fresh[d + c:d + t] = 0
    _C.apply_plan_cpu(plan, [(work.ctypes.data, 8, work.size)], threads)
    want = expected_after(rows, new_widths)
    got_in, got_out = rows_of(arena, work), rows_of(arena, fresh)
    for i in range(arena.num_rows):
        np.testing.assert_array_equal(got_in[i], want[i])
        np.testing.assert_array_equal(got_out[i], want[i])
    arena.validate()


def test_parallel_relayout_with_large_shift_falls_back_correctly():
    arena = _C.Arena(64, 4, 0, -1)
    n = 10000
    arena.append(np.full(n, 8))
    buf = np.random.default_rng(1).standard_normal(arena.capacity).astype(np.float32)
    rows = rows_of(arena, buf)
    plan = arena.set_widths(np.full(n, 16))  # every row moves right by a growing amount
    buf = np.concatenate([buf, np.full(plan.capacity_after - buf.size, np.nan, np.float32)])
    _C.apply_plan_cpu(plan, [(buf.ctypes.data, 4, buf.size)], 2)
    for got, want in zip(rows_of(arena, buf), expected_after(rows, [16] * n)):
        np.testing.assert_array_equal(got, want)


def test_apply_refuses_a_buffer_too_small():
    arena = _C.Arena(8, 4, 0, -1)
    plan = arena.append(np.array([8, 8]))
    small = np.zeros(15, np.float32)
    with pytest.raises(IndexError):
        _C.apply_plan_cpu(plan, [(small.ctypes.data, 4, small.size)], 1)
    assert np.all(small == 0)


def test_unordered_steps_are_independent():
    arena, buf, rng = scrambled_arena(3000, 16, seed=7)
    for _ in range(20):
        ids = rng.choice(arena.num_rows, 50)
        plan = arena.resize(ids, rng.integers(0, 17, ids.size))
        for step in plan.steps:
            if step.ordered:
                continue
            src, dst, copy, total = (np.asarray(x) for x in (step.src, step.dst, step.copy, step.total))
            order = np.argsort(dst)
            assert np.all(dst[order][1:] >= (dst + total)[order][:-1])  # writes disjoint
            for k in range(len(src)):
                others = np.arange(len(src)) != k
                hit = (dst[k] < src + copy) & (src < dst[k] + total[k]) & (copy > 0) & others
                assert not hit.any()
        arena.validate()


def test_metadata_stays_bounded_under_churn():
    n = 100000
    a = RaggedArena(n, 32, np.full(n, 16), budget_bytes=int(n * 16 * 4 * 1.2) + n * META)
    rng = np.random.default_rng(0)
    for _ in range(40):
        ids = rng.integers(0, n, 4096)
        a.resize(ids, a.widths[torch.from_numpy(rng.integers(0, n, 4096))])
        st = a.memory_stats()
        assert st["metadata_bytes"] <= 16 * n
    a.validate()


@pytest.mark.parametrize("threads", [1, 2])
def test_relayout_in_id_order_with_new_and_dropped_rows(threads):
    """The sorted fast path: rows gaining storage take their id position, dropped
    rows vanish, right- and left-mover runs interleave; in place, parallel and
    out of place agree."""
    rng = np.random.default_rng(5)
    n, d_max = 20000, 24
    arena = _C.Arena(d_max, 8, 0, -1)
    arena.append(rng.integers(0, d_max + 1, n))  # some rows start without storage
    assert np.all(np.diff(arena.offsets[arena.widths > 0]) > 0)
    buf = rng.standard_normal(arena.capacity)
    rows = rows_of(arena, buf)
    new_widths = rng.integers(0, d_max + 1, n)
    plan = arena.set_widths(new_widths)
    (step,) = plan.steps
    assert len(step) == np.count_nonzero(new_widths)
    live = arena.widths > 0
    assert np.all(np.diff(arena.offsets[live]) > 0)  # still in id order: the next call is fast too
    work = np.concatenate([buf, np.full(max(0, plan.capacity_after - buf.size), np.nan)])
    fresh = np.full(work.size, np.nan)
    for s, d, c, t in zip(step.src, step.dst, step.copy, step.total):
        fresh[d:d + c] = work[s:s + c]
        fresh[d + c:d + t] = 0
    _C.apply_plan_cpu(plan, [(work.ctypes.data, 8, work.size)], threads)
    want = expected_after(rows, new_widths)
    for got in (rows_of(arena, work), rows_of(arena, fresh)):
        for i in range(n):
            np.testing.assert_array_equal(got[i], want[i])
    arena.validate()


def test_set_widths_keeps_capacity_on_a_small_shrink_and_trims_a_large_one():
    a = make([8] * 16)
    a.set_widths([8] * 15 + [1])  # frees 7 of 128 (< 1/8): buffers kept, used in place
    assert a.capacity == 128 and a.memory_stats()["free_bytes"] == 7 * 4
    a.validate()
    a.set_widths([4] * 16)  # frees half: trimmed
    assert a.capacity == 64
    a.compact()
    a.set_widths([4] * 15 + [3])
    a.compact()  # compact always trims exactly
    assert a.capacity == 63


def test_plan_held_by_python_is_not_recycled():
    arena = _C.Arena(8, 4, 0, -1)
    first = arena.append(np.full(100, 4))
    src = np.asarray(first.steps[0].src).copy()
    arena.set_widths(np.full(100, 8))
    arena.set_widths(np.full(100, 2))
    np.testing.assert_array_equal(first.steps[0].src, src)


def _huge_page_advice(address: int) -> bool:
    """Whether the mapping holding `address` carries MADV_HUGEPAGE ("hg" in /proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(" ", 1)[0]
            if "-" in first and ":" not in first:
                lo, hi = (int(x, 16) for x in first.split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("VmFlags:"):
                return "hg" in line.split()
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux feature")
def test_cpu_buffers_ask_for_huge_pages():
    """Weight and per-element state of a table past a few MiB are advised huge pages, after every way a
    buffer is replaced (growth, re-layout, trim)."""
    a = make(np.full(600_000, 8), state_per_element=1)  # 19 MB per buffer, 5.6 MB after compact
    for step in ("init", "append", "set_widths", "compact"):
        if step == "append":
            a.append(np.full(100_000, 8))
        elif step == "set_widths":
            a.set_widths(np.full(a.num_rows, 4))
        elif step == "compact":
            a.release(np.arange(0, a.num_rows, 2))
            a.compact()
        for buffer in (a.weight, a.state[0]):
            assert buffer.numel() * buffer.element_size() >= 4 << 20, step
            assert _huge_page_advice(buffer.data_ptr() + (2 << 20)), step


def test_with_layout_rebuilds_the_exact_layout_and_refuses_a_broken_one():
    a = make([3, 0, 8, 5])
    a.resize(np.array([2]), np.array([1]))  # leaves free space inside
    state = a._arena.layout_state()
    b = _C.Arena.with_layout(*state)
    b.validate()
    assert np.array_equal(b.offsets, a._arena.offsets) and b.capacity == a._arena.capacity
    assert b.stats()["free_extents"] == a._arena.stats()["free_extents"] > 0
    d_max, bpe, bpr, budget, offsets, widths, capacity = state
    overlapping = offsets.copy()
    overlapping[3] = overlapping[0] + 1
    with pytest.raises(ValueError, match="overlaps"):
        _C.Arena.with_layout(d_max, bpe, bpr, budget, overlapping, widths, capacity)
    with pytest.raises(ValueError, match="capacity"):
        _C.Arena.with_layout(d_max, bpe, bpr, budget, offsets, widths, int(widths.sum()) - 1)
    with pytest.raises(ValueError, match="budget"):
        _C.Arena.with_layout(d_max, bpe, bpr, bpe, offsets, widths, capacity)
    with pytest.raises(ValueError, match="outside"):
        _C.Arena.with_layout(d_max, bpe, bpr, budget, offsets, widths + 20, capacity)
