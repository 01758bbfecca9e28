"""Time and peak memory of synthetic_stream (+ prepare_stream) at a given scale. Manual, not a test:

    .venv/bin/python bench/bench_synthetic.py 1000000 1000000 20000000
"""
import resource
import sys
import time

from pyscall.app.data import prepare_stream, synthetic_stream


def peak_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def main():
    n_users, n_items, n_interactions = (int(a) for a in sys.argv[1:4])
    t0 = time.perf_counter()
    inter = synthetic_stream(n_users, n_items, n_interactions, seed=0)
    t1 = time.perf_counter()
    print(f"synthetic_stream({n_users}, {n_items}, {n_interactions}): {t1 - t0:.1f} s, "
          f"peak RSS {peak_gib():.2f} GiB, {inter.n_users} users, {inter.n_items} items", flush=True)
    stream = prepare_stream(inter)  # paper segmentation: 15,000 new entities per segment
    t2 = time.perf_counter()
    print(f"prepare_stream(default): {t2 - t1:.1f} s, {len(stream.segments)} segments, "
          f"peak RSS {peak_gib():.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
