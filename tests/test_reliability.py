"""Issue 24: a failed load changes nothing, the budget counts everything, bad input gets a clear error.

(The threads of the issue are in test_arena_threads.py, the random operations in test_arena_property.py.)
"""
import subprocess
import sys

import pytest
import torch

import pyscall
from pyscall.arena import METADATA_BYTES_PER_ROW as META, memory_ceiling


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
