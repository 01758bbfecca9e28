"""Runs the C++ code that has a separate AVX-512 path (the row mover of re-layouts) on seeded random
data with a given `_C` and prints a digest of the results.
tests/test_cuda_build.py runs it with the portable build (the plain loops) and compares the digest
with the installed build's: both paths must give the same bits.

    python tests/portable_probe.py [BUILD_DIR]     # BUILD_DIR holds _C; default: pyscall._C
"""
import hashlib
import sys

import numpy as np


def replay(plan, buf: np.ndarray, c_module) -> np.ndarray:
    # As pyscall.replay.CpuReplay does for a plan that is not a re-layout into new buffers: grow, replay in place, trim.
    if plan.capacity_after > buf.size:
        buf = np.concatenate([buf, np.zeros(plan.capacity_after - buf.size, buf.dtype)])
    if plan.steps:
        c_module.apply_plan_cpu(plan, [(buf.ctypes.data, buf.itemsize, buf.size)], 1)
    return buf[: plan.capacity_after].copy()


def relayout_digest(c_module, steps: int = 60, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    d_max = 40  # rows of 0..160 bytes: every masked-chunk count the movers take
    arena = c_module.Arena(d_max, 4, 0, -1)
    buf = np.zeros(0, np.float32)
    for step in range(steps):
        n = arena.num_rows
        op = rng.integers(4) if n else 0
        if op == 0:
            plan = arena.append(rng.integers(0, d_max + 1, rng.integers(1, 50)).astype(np.int32))
        elif op == 1:
            k = int(rng.integers(1, n + 1))
            plan = arena.resize(rng.integers(0, n, k), rng.integers(0, d_max + 1, k).astype(np.int32))
        elif op == 2:
            plan = arena.set_widths(rng.integers(0, d_max + 1, n).astype(np.int32))
        else:
            plan = arena.compact()
        buf = replay(plan, buf, c_module)
        # Give every third live row fresh, position-dependent values so that later moves are visible.
        offsets, widths = np.asarray(arena.offsets), np.asarray(arena.widths)
        for i in np.flatnonzero(widths)[::3]:
            buf[offsets[i]:offsets[i] + widths[i]] = step * 1000 + np.arange(widths[i])
    arena.validate()
    h = hashlib.sha256()
    offsets, widths = np.asarray(arena.offsets), np.asarray(arena.widths)
    for i in range(arena.num_rows):
        h.update(buf[offsets[i]:offsets[i] + widths[i]].tobytes())
    h.update(widths.tobytes())
    return h.hexdigest()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.path.insert(0, sys.argv[1])
        import _C
    else:
        from pyscall import _C
    print(relayout_digest(_C))
