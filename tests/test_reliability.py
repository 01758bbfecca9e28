"""Issue 24: a failed load changes nothing, the budget counts everything, bad input gets a clear error.

(The threads of the issue are in test_arena_threads.py, the random operations in test_arena_property.py.)
"""
import subprocess
import sys

import pytest
import torch

import pyscall
from pyscall.arena import METADATA_BYTES_PER_ROW as META, memory_ceiling


def _everything(table):
    """What a load may change: the layout, the values, the optimizer state and step, the gradient."""
    a = table._arena
    return dict(widths=table.widths.tolist(), offsets=a.offsets.tolist(), capacity=a.capacity,
                state={k: v.clone() for k, v in table.state_dict().items()}, step=table.step,
                buffers=[b.detach().clone() for b in (a.weight, *a.state, *a.row_state)],
                grad=None if table.weight.grad is None else table.weight.grad.clone())


def _assert_unchanged(table, before):
    after = _everything(table)
    assert after.keys() == before.keys()
    for key in before:
        if key in ("state",):
            assert before[key].keys() == after[key].keys()
            assert all(torch.equal(before[key][k], after[key][k]) for k in before[key]), key
        elif key == "buffers":
            assert all(torch.equal(x, y) for x, y in zip(before[key], after[key])), key
        elif key == "grad":
            assert (before[key] is None) == (after[key] is None) and (
                before[key] is None or torch.equal(before[key], after[key]))
        else:
            assert before[key] == after[key], key
    table._arena.validate()


def _trained(table, steps=2):
    for _ in range(steps):
        table(torch.randint(0, table.num_embeddings, (16,))).sum().backward()
    return table


# ---- 1. a failed load changes nothing ---------------------------------------------------------------------
def test_load_with_unexpected_keys_changes_nothing():
    # The report's case: an Adam checkpoint into an SGD table raised after installing the Adam widths and step.
    torch.manual_seed(0)
    src = _trained(pyscall.Embedding(10, 8, widths=[3] * 10, optimizer="adam"))
    dst = _trained(pyscall.Embedding(10, 8, optimizer="sgd"))
    before = _everything(dst)
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "state.0", "state.1"'):
        dst.load_state_dict(src.state_dict())
    _assert_unchanged(dst, before)


def test_load_with_unexpected_keys_inside_a_model_changes_nothing():
    src = torch.nn.Sequential(pyscall.Embedding(10, 8, widths=[3] * 10, optimizer="adam"))
    dst = torch.nn.Sequential(pyscall.Embedding(10, 8, optimizer="sgd"))
    before = _everything(dst[0])
    with pytest.raises(RuntimeError, match="Unexpected key"):
        dst.load_state_dict(src.state_dict())
    _assert_unchanged(dst[0], before)


def test_strict_false_on_the_table_ignores_the_keys_it_does_not_have():
    src = _trained(pyscall.Embedding(10, 8, widths=[3] * 10, optimizer="adam"))
    dst = pyscall.Embedding(10, 8, optimizer="sgd")
    result = dst.load_state_dict(src.state_dict(), strict=False)
    assert sorted(result.unexpected_keys) == ["state.0", "state.1"]
    assert torch.equal(dst.to_dense(), src.to_dense()) and dst.step == src.step


def test_a_checkpoint_of_another_row_count_is_refused_unless_asked():
    src = pyscall.Embedding(5, 8, widths=[2, 3, 4, 5, 6])
    dst = _trained(pyscall.Embedding(10, 8))
    before = _everything(dst)
    with pytest.raises(RuntimeError, match="the checkpoint has 5 rows, the table has 10.*match_rows=False"):
        dst.load_state_dict(src.state_dict())
    _assert_unchanged(dst, before)
    dst.load_state_dict(src.state_dict(), match_rows=False)
    assert dst.num_embeddings == 5 and torch.equal(dst.to_dense(), src.to_dense())
    assert dst.weight.grad is None  # a gradient of the old rows does not outlive them


@pytest.mark.parametrize("key,value,error,match", [
    ("step", torch.tensor([-1]), ValueError, "step must be >= 0"),
    ("step", torch.tensor(3), ValueError, r"shape \(1,\)"),
    ("step", torch.tensor([3.0]), ValueError, "integer tensor"),
    ("step", torch.tensor([True]), ValueError, "integer tensor"),
    ("values", "int", TypeError, "values must be a floating-point tensor"),
    ("values", "bool", TypeError, "values must be a floating-point tensor"),
    ("values", "complex", TypeError, "values must be a floating-point tensor"),
    ("state.0", "int", TypeError, "state.0 must be a floating-point tensor"),
    ("widths", "2d", ValueError, "widths must be a 1-D tensor"),
])
def test_a_bad_checkpoint_entry_is_refused_and_changes_nothing(key, value, error, match):
    src = _trained(pyscall.Embedding(10, 8, widths=[3] * 10, optimizer="adam"))
    sd = src.state_dict()
    if value in ("int", "bool", "complex"):
        value = {"int": sd[key].to(torch.int32), "bool": sd[key] > 0, "complex": sd[key].to(torch.complex64)}[value]
    elif value == "2d":
        value = sd[key].reshape(2, 5)
    dst = _trained(pyscall.Embedding(10, 8, optimizer="adam"))
    before = _everything(dst)
    with pytest.raises(error, match=match):
        dst.load_state_dict({**sd, key: value})
    _assert_unchanged(dst, before)


# ---- 3. the budget counts everything, and a request that cannot fit allocates nothing ----------------------
def test_the_budget_counts_each_rows_metadata():
    n = 100
    with pytest.raises(pyscall.BudgetExceededError, match="16 are the row's metadata"):
        pyscall.Embedding(n, 8, widths=[0] * n, budget_bytes=n * META - 1)
    e = pyscall.Embedding(n, 8, widths=[0] * n, budget_bytes=n * META)
    stats = e.memory_stats()
    assert stats["row_metadata_bytes"] == n * META and stats["capacity_bytes"] == 0
    assert stats["metadata_bytes"] <= stats["row_metadata_bytes"] + 4096  # what it holds: within the charge
    with pytest.raises(pyscall.BudgetExceededError):
        e.append(0)
    assert e.num_embeddings == n


def test_many_zero_width_rows_under_a_small_budget_are_refused():
    # The report: 10**9 zero-width rows under 1 MB ended in std::bad_alloc.
    e = pyscall.Embedding(10, 8, budget_bytes=2**20)
    widths = torch.zeros(10**7, dtype=torch.int32)
    with pytest.raises(pyscall.BudgetExceededError, match="10000010 rows"):
        e.append(widths)
    assert e.num_embeddings == 10
    e._arena.validate()


_HUGE = """
import resource, sys, time, torch, pyscall
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
for label, make in [
        ("budgeted table of 2**28 rows", lambda: pyscall.Embedding(2**28, 8, budget_bytes=2**20)),
        ("budgeted table of 2**28 zero-width rows",
         lambda: pyscall.Embedding(2**28, 8, widths=torch.zeros(1, dtype=torch.int32).expand(2**28), budget_bytes=2**20)),
        ("table larger than the machine", lambda: pyscall.Embedding(2**33, 8)),
        ("zero-width rows whose metadata outgrows the machine",
         lambda: pyscall.Embedding(2**33, 8, widths=torch.zeros(1, dtype=torch.int32).expand(2**33)))]:
    base, start = peak_mb(), time.perf_counter()
    try:
        make()
        print(label, "NOT REFUSED")
    except (pyscall.BudgetExceededError, MemoryError) as e:
        print(label, type(e).__name__, "in %.2f s, peak grew %.0f MB" % (time.perf_counter() - start, peak_mb() - base),
              str(e)[:400])
"""


def test_huge_tables_are_refused_before_memory_is_spent():
    # The report: Embedding(2**31, 8) ran 45 s to 16.6 GB before failing, and with budget_bytes=2**20 it still
    # built a 16 GiB widths array first. A child process, its address space capped, so that a build that
    # allocates first fails fast instead of paging the machine.
    def cap():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (16 * 2**30, 16 * 2**30))
    result = subprocess.run([sys.executable, "-c", _HUGE], capture_output=True, text=True, timeout=300,
                            preexec_fn=cap)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    for line in lines:
        assert "NOT REFUSED" not in line, line
        grown = float(line.split("peak grew ")[1].split(" MB")[0])
        seconds = float(line.split(" in ")[1].split(" s")[0])
        assert grown < 64 and seconds < 1.0, line
    assert "BudgetExceededError" in lines[0] and "BudgetExceededError" in lines[1]
    assert "MemoryError" in lines[2] and "memory of the machine" in lines[2], lines[2]
    assert "MemoryError" in lines[3] and "memory of the machine" in lines[3], lines[3]


def test_memory_ceiling_is_the_hosts_memory():
    ceiling = memory_ceiling(torch.device("cpu"))
    assert ceiling > 2**28  # this machine has more than 256 MB
    assert memory_ceiling(torch.device("meta")) == -1
