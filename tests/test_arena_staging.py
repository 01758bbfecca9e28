"""The arena stages an operation whose plan needs buffers allocated: until commit() its metadata stays as it was,
so an allocation that fails changes nothing, and commit() gives exactly what the operation gives unstaged."""
import numpy as np
import pytest

from pyscall import _C


def _metadata(arena):
    stats = arena.stats()
    return (arena.offsets.tolist(), arena.widths.tolist(), arena.capacity, arena.used, arena.uniform_width,
            {k: stats[k] for k in ("free_bytes", "largest_free_bytes", "free_extents", "fragmentation", "num_rows")})


def _fragmented(device_replay: bool, bytes_per_row: int = 0):
    rng = np.random.default_rng(3)
    a = _C.Arena(16, 4, bytes_per_row, -1)
    a.set_relayout_allocates(device_replay)
    a.append(rng.integers(0, 17, 50).astype(np.int32))
    a.release(np.arange(0, 50, 3))
    a.resize(np.arange(1, 50, 10), np.full(5, 16, dtype=np.int32))
    a.commit()
    return a


OPS = {"append": lambda a: a.append(np.full(40, 16, dtype=np.int32)),
       "append_few": lambda a: a.append(np.array([2, 3], dtype=np.int32)),
       "resize_few": lambda a: a.resize(np.array([2, 4, 4]), np.array([16, 1, 9], dtype=np.int32)),
       "resize_grow": lambda a: a.resize(np.arange(0, 50, 7), np.full(8, 16, dtype=np.int32)),
       "resize_many": lambda a: a.resize(np.arange(50), np.full(50, 16, dtype=np.int32)),
       "set_widths": lambda a: a.set_widths(np.full(50, 16, dtype=np.int32)),
       "release": lambda a: a.release(np.array([1, 5, 7])),
       "compact": lambda a: a.compact()}


@pytest.mark.parametrize("device_replay", [False, True])
@pytest.mark.parametrize("bytes_per_row", [0, 4])
@pytest.mark.parametrize("op", sorted(OPS))
def test_a_staged_operation_changes_nothing_until_commit(op, device_replay, bytes_per_row):
    staged, twin = _fragmented(device_replay, bytes_per_row), _fragmented(device_replay, bytes_per_row)
    before = _metadata(staged)
    plan = OPS[op](staged)
    staged.stage()
    expected_plan = OPS[op](twin)
    needs_buffers = (plan.capacity_after != plan.capacity_before or device_replay
                     or (bytes_per_row and plan.rows_after != plan.rows_before))
    assert plan.staged == bool(needs_buffers)
    if plan.staged:
        assert _metadata(staged) == before
        staged.validate()
    assert (plan.replay, plan.capacity_before, plan.capacity_after, plan.used_after, plan.rows_after) == \
        (expected_plan.replay, expected_plan.capacity_before, expected_plan.capacity_after,
         expected_plan.used_after, expected_plan.rows_after)
    staged.commit()
    twin.commit()
    assert _metadata(staged) == _metadata(twin)
    staged.validate()
    # And the next operations go on alike.
    OPS["resize_few"](staged), OPS["resize_few"](twin)
    assert _metadata(staged) == _metadata(twin)


@pytest.mark.parametrize("op", sorted(OPS))
def test_a_staged_operation_never_committed_is_dropped_by_the_next(op):
    a, twin = _fragmented(True), _fragmented(True)
    before = _metadata(a)
    OPS[op](a)
    a.stage()  # its buffers never come
    assert _metadata(a) == before
    OPS["release"](a), OPS["release"](twin)
    a.commit(), twin.commit()
    assert _metadata(a) == _metadata(twin)
    a.validate()


def test_the_plan_says_how_the_buffers_follow():
    a = _C.Arena(8, 4, 4, -1)
    plan = a.append(np.full(10, 8, dtype=np.int32))
    assert (plan.replay, plan.capacity_before, plan.capacity_after, plan.rows_before, plan.rows_after) == \
        ("grow", 0, 80, 0, 10)
    a.commit()
    plan = a.release(np.array([3, 3, 9]))
    assert plan.replay == "in_place" and plan.reset_rows.tolist() == [3, 3, 9]
    a.commit()
    plan = a.compact()
    assert plan.replay == "fresh" and plan.capacity_after == plan.used_after == 64
    a.commit()
    plan = a.set_widths(np.full(10, 6, dtype=np.int32))  # 60 of 64: keeps the capacity
    assert plan.replay == "in_place" and not plan.staged


def test_appends_with_per_row_state_stay_whole_through_in_place_compactions():
    # New rows need per-row state allocated even when the rows' data moves in place (an append that ends with
    # the compaction the free-extent limit asks for, at the capacity it started with).
    import torch

    from pyscall.arena import RaggedArena
    g = torch.Generator().manual_seed(0)
    a = RaggedArena(1000, 8, torch.randint(0, 9, (1000,), generator=g), state_per_row=1)
    for _ in range(300):
        a.append(torch.randint(0, 9, (16,), generator=g, dtype=torch.int32))
        a.resize(torch.randint(0, a.num_rows, (64,), generator=g), torch.randint(0, 9, (64,), generator=g))
        a.validate()
    assert a.row_state[0].numel() == a.num_rows


def test_a_budget_that_only_the_free_space_exceeds_compacts_staged_and_takes_effect_at_commit():
    a = _fragmented(False)
    stats = a.stats()
    packed = stats["used_bytes"] + stats["row_metadata_bytes"]
    assert stats["capacity_bytes"] + stats["row_metadata_bytes"] > packed
    before = _metadata(a), a.stats()["budget_bytes"]
    plan = a.set_budget(packed)
    a.stage()
    assert plan.staged and plan.replay == "fresh" and plan.capacity_after == a.used
    assert (_metadata(a), a.stats()["budget_bytes"]) == before  # an allocation failing now changes nothing
    a.commit()
    assert a.stats()["budget_bytes"] == packed and a.stats()["free_bytes"] == 0
    a.validate()
    plan = a.set_budget(-1)  # room enough: nothing moves, nothing staged
    a.stage()
    assert not plan.staged and not plan.steps and a.stats()["budget_bytes"] == -1
