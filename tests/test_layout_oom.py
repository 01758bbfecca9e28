"""An out-of-memory error from the allocator while a table grows leaves it exactly as it was: values, widths,
offsets, optimizer state (per element and per row), step count and memory statistics."""
from unittest import mock

import pytest
import torch

import pyscall
import pyscall.arena as arena_module


def _snapshot(table):
    a = table._arena
    stats = {k: v for k, v in table.memory_stats().items() if k not in ("metadata_bytes", "scratch_bytes")}
    return dict(widths=a.widths.tolist(), offsets=a.offsets.tolist(), capacity=a.capacity, stats=stats,
                step=table.step, buffers=[b.detach().clone() for b in (a.weight, *a.state, *a.row_state)])


def _assert_same(after, before):
    assert {k: v for k, v in after.items() if k != "buffers"} == {k: v for k, v in before.items() if k != "buffers"}
    assert len(after["buffers"]) == len(before["buffers"])
    for x, y in zip(after["buffers"], before["buffers"]):
        assert torch.equal(x, y)


def _failing_allocator(fail_at: int):
    """_cpu_buffer whose allocations after the first fail_at raise torch's out-of-memory error."""
    real, calls = arena_module._cpu_buffer, [0]

    def allocate(numel, dtype):
        calls[0] += 1
        if calls[0] > fail_at:
            raise torch.OutOfMemoryError("injected: out of memory")
        return real(numel, dtype)
    return allocate


@pytest.mark.parametrize("grow", ["resize", "set_widths", "append"])
@pytest.mark.parametrize("optimizer,fail_at", [("adam", 0), ("adam", 1), ("adam", 2), ("rowwise_adagrad", 0)])
def test_out_of_memory_during_a_grow_leaves_the_table_as_it_was(optimizer, fail_at, grow):
    """fail_at: the allocations that succeed first (the weight's, then one per state buffer)."""
    torch.manual_seed(0)
    table = pyscall.Embedding(40, 16, widths=torch.randint(1, 9, (40,)), optimizer=optimizer, lr=0.1)
    for _ in range(3):  # optimizer state and a step count that are not zeros
        table(torch.randint(0, 40, (32,))).square().sum().backward()
    table.release([5, 6])  # free space in the middle: a grow then has holes it cannot use alone
    before = _snapshot(table)
    assert all(b.abs().sum() > 0 for b in before["buffers"])
    change = {"resize": lambda: table.resize(torch.arange(0, 40, 3), 16),
              "set_widths": lambda: table.set_widths(torch.full((40,), 16)),
              "append": lambda: table.append(torch.full((30,), 16))}[grow]
    with mock.patch.object(arena_module, "_cpu_buffer", _failing_allocator(fail_at)):
        with pytest.raises(torch.OutOfMemoryError, match="injected"):
            change()
    table._arena.validate()
    _assert_same(_snapshot(table), before)
    change()  # and with memory, the same call goes through
    table._arena.validate()
    assert table.memory_stats()["capacity_bytes"] > before["stats"]["capacity_bytes"]
