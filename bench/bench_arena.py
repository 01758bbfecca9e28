"""Arena benchmarks; every ratio is against a baseline measured in the same run.

    python bench/bench_arena.py [--rows 1000000] [--reps 8] [--only-relayout] [--out FILE]

(a) set_widths re-layout of `rows` rows (d_max 256, lognormal widths clipped to
    [1, 256], mean ~16) to a fresh assignment of the same kind: bytes written /
    time, as a fraction of a numpy copy of the same bytes (1 and 2 threads).
(b) `rows` single-row resizes through the batched API (random rows; new width =
    the old width of another random row; budget 1.2x the bytes held,
    metadata included): rows/s as
    one call and in chunks of 4096.
(c) metadata bytes per row from memory_stats(), beside data bytes per row.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

from pyscall.arena import METADATA_BYTES_PER_ROW, RaggedArena

D_MAX = 256


def lognormal_widths(rng, n, mean=16.0, sigma=1.0):
    w = rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, n)
    return np.clip(np.rint(w), 1, D_MAX).astype(np.int64)


def timed(reps, fn):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def numpy_copy_seconds(nbytes, reps):
    """(warm-copy times: destination allocated, best fresh copy: includes its page faults)."""
    src = np.random.default_rng(0).random(nbytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    return timed(reps, lambda: np.copyto(dst, src)), min(timed(reps, lambda: src.copy()))


def bench_relayout(rows, reps, rng):
    a_widths, b_widths = lognormal_widths(rng, rows), lognormal_widths(rng, rows)
    arena = RaggedArena(rows, D_MAX, a_widths)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        times, moved = [], []
        for r in range(reps):
            target = b_widths if r % 2 == 0 else a_widths
            t0 = time.perf_counter()
            arena.set_widths(target)
            times.append(time.perf_counter() - t0)
            moved.append(int(target.sum()) * arena.weight.element_size())
        # The first call may grow capacity (fresh buffers); later ones run in place.
        t_np, t_fresh = numpy_copy_seconds(int(np.median(moved)), reps)
        results.append((threads, int(np.median(moved)), times, t_np, t_fresh))
    arena.validate()
    return results, arena.memory_stats()


def bench_single_row_resizes(rows, chunk, rng, threads):
    torch.set_num_threads(threads)
    widths = lognormal_widths(rng, rows)
    budget = int(1.2 * (widths.sum() * 4 + rows * METADATA_BYTES_PER_ROW))  # the budget counts the metadata
    arena = RaggedArena(rows, D_MAX, widths, budget_bytes=budget)
    ids = rng.integers(0, rows, rows)
    new = widths[rng.integers(0, rows, rows)]
    ids_t, new_t = torch.from_numpy(ids), torch.from_numpy(new)
    t0 = time.perf_counter()
    for s in range(0, rows, chunk):
        arena.resize(ids_t[s:s + chunk], new_t[s:s + chunk])
    seconds = time.perf_counter() - t0
    arena.validate()
    return rows / seconds, arena.memory_stats()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--only-relayout", action="store_true", help="run part (a) only")
    ap.add_argument("--out", help="also write the report, with the command, date and load, to this file")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    lines = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    rng = np.random.default_rng(0)
    n = args.rows

    say(f"(a) set_widths re-layout, {n} rows, d_max {D_MAX}, float32 weight, no state")
    say("  times: median [min] of the reps; ratio = numpy warm copy / arena, medians [mins]")
    say(f"{'threads':>7} {'MB written':>10} {'arena ms':>14} {'numpy ms':>12} {'ratio':>15} "
          f"{'fresh-copy ms':>13}")
    relayout, stats_a = bench_relayout(n, args.reps, rng)
    for threads, nbytes, times, t_np, t_fresh in relayout:
        t_med, t_min, np_med, np_min = np.median(times), min(times), np.median(t_np), min(t_np)
        say(f"{threads:>7} {nbytes / 1e6:>10.1f} {t_med * 1e3:>6.1f} [{t_min * 1e3:>5.1f}] "
              f"{np_med * 1e3:>4.1f} [{np_min * 1e3:>4.1f}] {np_med / t_med:>6.1%} [{np_min / t_min:>6.1%}] "
              f"{t_fresh * 1e3:>13.1f}")

    if args.only_relayout:
        say(f"  plan scratch kept: {stats_a['scratch_bytes'] / n:.1f} B/row")
        return write_report(args, lines, load)
    say(f"\n(b) {n} single-row resizes, budget 1.2x used bytes")
    say(f"{'threads':>7} {'pairs/call':>10} {'rows/s':>12} {'metadata B/row':>15} "
          f"{'data B/row':>11} {'free extents':>13}")
    stats_b = []
    for threads in (1, 2):
        for chunk in (n, 4096):
            rate, st = bench_single_row_resizes(n, chunk, rng, threads)
            stats_b.append(st)
            say(f"{threads:>7} {chunk:>10} {rate:>12,.0f} {st['metadata_bytes'] / n:>15.2f} "
                  f"{st['capacity_bytes'] / n:>11.2f} {st['free_extents']:>13}")

    say("\n(c) metadata bytes per row (memory_stats()['metadata_bytes'] / num_rows)")
    say(f"  after (a) re-layouts:          {stats_a['metadata_bytes'] / n:6.2f} B/row "
          f"(data {stats_a['capacity_bytes'] / n:.2f} B/row)")
    worst = max(stats_b, key=lambda s: s["metadata_bytes"])
    say(f"  worst after (b) resizes:       {worst['metadata_bytes'] / n:6.2f} B/row "
          f"(data {worst['capacity_bytes'] / n:.2f} B/row)")
    write_report(args, lines, load)


def write_report(args, lines: list, load: float) -> None:
    if not args.out:
        return
    command = "python bench/bench_arena.py " + " ".join(sys.argv[1:])
    header = (f"Command: {command}\n({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"{os.cpu_count()} cores, load average {load:.2f} before the run)\n")
    with open(args.out, "w") as f:
        f.write(header + "\n```\n" + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
