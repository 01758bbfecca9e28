"""Module-level CPU benchmark of pyscall.Embedding / EmbeddingBag against torch, measured in one run.

    python bench/bench_embedding.py                  # 1,000,000 rows, batch 4,096, 1 and 2 threads
    python bench/bench_embedding.py --rows 100000 --repeat 5   # quicker

Every speed figure is a ratio against a baseline timed in the same process over a pool of random
batches taken in turn (64 by default: a batch comes back only after 63 others, so its rows are no
longer in cache), in two schedules: "blocks", the main figure (each side runs --block calls in a
row, the sides taking turns, as one op runs step after step in a training loop), and "alternating"
(the two sides called in turn, so each call meets caches the other side has just filled). The
baselines:
torch.nn.Embedding(sparse=True) with SparseAdam / SGD for training steps,
torch.index_select into a preallocated output for lookups, and a plain tensor copy for the memory
bandwidth. "Read floor" rows time one pass that only reads every cache line a step or a bag sum
reads (bench/touch_floor.cpp, on the same kind of table): no kernel reading them with the same
prefetching can be faster here, so a floor's ratio is the most pyscall could reach. A training step
is what the embedding does in training: forward, backward from a given output gradient
(out.backward(grad), the same fixed random gradient on both sides), and the optimizer update
(optimizer.step() for torch, fused into backward for pyscall). Bandwidth counts bytes read plus bytes
written (a copy of S bytes moves 2*S). Memory is measured bytes (memory_stats() for pyscall,
tensor sizes for torch). Results go to stdout and, with --out, to a Markdown file.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch import nn

import pyscall
from pyscall import host, ops
from pyscall.backends import cpu as backend_cpu
from pyscall.app.scall import power_law_sizes
from touch_floor import DISTANCES, Touch, library as touch_library


def timed(*fns, repeat: int, block: int = 1, warmup: int = 3) -> list[float]:
    """Median wall time in seconds of one call of each fn. Each repetition runs every fn in turn,
    `block` calls each, so that a slow spell of this shared machine hits the baseline and pyscall
    alike; block 1 alternates single calls."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, t in zip(fns, times):
            for _ in range(block):
                start = time.perf_counter()
                fn()
                t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def compared(*fns, repeat: int, block: int) -> tuple[list[float], list[float]]:
    """Median seconds of each fn in blocks of `block` calls, and alternating one call at a time."""
    return timed(*fns, repeat=repeat, block=block), timed(*fns, repeat=repeat * block)


def step_row(what: str, threads: int, baseline: str, times, memory: str = "") -> dict:
    """A result row for a timed pair: times = compared(baseline fn, pyscall fn)."""
    (base, ours), (alt_base, alt_ours) = times
    return dict(what=what, threads=threads, baseline=baseline, base_ms=base * 1e3, ours_ms=ours * 1e3,
                speedup=base / ours, alternating=alt_base / alt_ours, memory=memory)


def torch_baseline(optimizer: str) -> str:
    return f"nn.Embedding(sparse) + {'SparseAdam' if optimizer == 'adam' else 'SGD'}"


def copy_bandwidth(repeat: int) -> float:
    src = torch.randn(64 * 2**20)  # 256 MiB
    dst = torch.empty_like(src)
    seconds, = timed(lambda: dst.copy_(src), repeat=repeat)
    return 2 * src.numel() * 4 / seconds


def power_law_widths(rows: int, mean: int, d_max: int) -> torch.Tensor:
    freq = (1 - torch.rand(rows)).pow(-1.5)  # heavy-tailed, in [1, inf) (rand may give 0); sizes follow the rank
    return power_law_sizes(freq, rows * mean, alpha=0.3, d_min=1, d_max=d_max)


class Batches:
    """A pool of random id batches handed out in turn: each step meets rows the last one did not
    touch, as in training, instead of one batch whose rows stay in cache. Each timed function
    gets its own Batches over the same pool."""

    def __init__(self, pool: list):
        self.pool, self.k = pool, 0

    def __call__(self):
        self.k += 1
        return self.pool[self.k % len(self.pool)]


def torch_step(d: int, rows: int, optimizer: str, ids: Batches, grad):
    emb = nn.Embedding(rows, d, sparse=True)
    opt = torch.optim.SparseAdam(emb.parameters()) if optimizer == "adam" else \
        torch.optim.SGD(emb.parameters(), lr=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        emb(ids()).backward(grad)
        opt.step()
    return step, emb.weight.numel() * 4 * (3 if optimizer == "adam" else 1)


def pyscall_step(d_max: int, rows: int, optimizer: str, ids: Batches, grad, widths=None, ragged_layout=False):
    """ragged_layout: a table of the same widths that is no longer laid out uniformly (one row resized
    away and back), so that its kernels find each row through its offset and width."""
    emb = pyscall.Embedding(rows, d_max, widths=widths, optimizer=optimizer, lr=0.01)
    if ragged_layout:
        emb.resize([0], d_max - 1)
        emb.resize([0], d_max)
        assert emb._arena.uniform_width == 0

    def step():
        emb(ids()).backward(grad)
    return step, emb.memory_stats()["capacity_bytes"]


def dropin_sparse_step(d: int, rows: int, ids: Batches, grad):
    """Drop-in mode with sparse=True and torch's SparseAdam: the code of the baseline, unchanged."""
    emb = pyscall.Embedding(rows, d, sparse=True)
    opt = torch.optim.SparseAdam(emb.parameters())

    def step():
        opt.zero_grad(set_to_none=True)
        emb(ids()).backward(grad)
        opt.step()
    return step


def kernels_step(d_max: int, rows: int, optimizer: str, ids: Batches, grad, widths=None):
    """The C++ kernels of a fused step alone, on a table of their own: the padded lookup, then the
    fused update from `grad` (no module, autograd or Python around them)."""
    emb = pyscall.Embedding(rows, d_max, widths=widths, optimizer=optimizer, lr=0.01)
    (weight, offsets, row_widths, uniform_width), (states, row_states, step_count, hparams, _) = emb._bundles()

    def step():
        batch = ids()
        backend_cpu.lookup(weight, offsets, row_widths, batch, d_max, uniform_width)
        backend_cpu.fused_update(grad, batch, None, None, None, offsets, row_widths, weight.detach(), states,
                                 row_states[0] if row_states else None,
                                 **host.optimizer_args(hparams, step_count, optimizer), uniform_width=uniform_width)
    return step


def timed_floor(base_fn, table: dict, batches: Batches, threads: int, repeat: int, block: int,
                per_position=()) -> tuple:
    """The read floor of `table` (floor_table's keyword arguments for Touch) timed in one run with base_fn,
    at the fastest of the prefetch distances tried: (that distance, compared()'s pair for it)."""
    touches = [Touch(**table, per_position=per_position, threads=threads, distance=d) for d in DISTANCES]
    (base, *floors), (alt_base, *alt_floors) = compared(base_fn, *[lambda t=t: t(batches()) for t in touches],
                                                        repeat=repeat, block=block)
    best = min(range(len(floors)), key=floors.__getitem__)
    return DISTANCES[best], ((base, floors[best]), (alt_base, alt_floors[best]))


def floor_table(emb, optimizer_state: bool = True) -> dict:
    """Touch's view of a module's table: its offsets, widths and per-row buffers."""
    (weight, offsets, widths, uniform_width), (states, *_) = emb._bundles()
    return dict(offsets=offsets, widths=widths, uniform_width=uniform_width, d_max=emb.embedding_dim,
                per_row=[weight.detach(), *(states if optimizer_state else ())])


def floor_reads(table: dict, optimizer: str) -> str:
    """What a step's read floor reads, for its label."""
    return ", ".join([*(["offsets, widths"] if not table["uniform_width"] else []), "weight",
                      *(["m, v"] if optimizer == "adam" else []), "gradient rows"])


def have_touch_floor() -> bool:
    """Whether touch_floor.cpp builds here (it needs a C++ compiler with OpenMP); says why not."""
    try:
        touch_library()
        return True
    except RuntimeError as e:
        print(f"no read-floor rows: {e}")
        return False


def run(rows: int, batch: int, repeat: int, block: int, threads: int, bandwidth: float,
        batches: int) -> list[dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pool = [torch.randint(0, rows, (batch,)) for _ in range(batches)]
    results = []
    floors = have_touch_floor()

    # Training steps: fused pyscall against torch sparse embedding + optimizer.
    for label, d_max, widths in [("all widths 64", 64, None),
                                 ("power law mean 16, d_max 256", 256, power_law_widths(rows, 16, 256))]:
        grad = torch.randn(batch, d_max)
        for optimizer in ("adam", "sgd"):
            base_fn, base_bytes = torch_step(d_max, rows, optimizer, Batches(pool), grad)
            ours_fn, ours_bytes = pyscall_step(d_max, rows, optimizer, Batches(pool), grad, widths)
            results.append(step_row(f"train step {optimizer}, {label}", threads, torch_baseline(optimizer),
                                    compared(base_fn, ours_fn, repeat=repeat, block=block),
                                    f"{ours_bytes / 2**20:.0f} MiB vs {base_bytes / 2**20:.0f} MiB "
                                    f"({ours_bytes / base_bytes:.3f}x)"))
            if widths is None and optimizer == "adam":
                # The same widths laid out raggedly take the metadata path, as every table of unequal widths
                # does: timed against torch, and against the uniform table in the same run.
                ragged_fn, _ = pyscall_step(d_max, rows, optimizer, Batches(pool), grad, ragged_layout=True)
                results.append(step_row(f"train step {optimizer}, {label}, ragged layout (rows found through "
                                        "their offsets and widths)", threads, torch_baseline(optimizer),
                                        compared(base_fn, ragged_fn, repeat=repeat, block=block)))
                results.append(step_row(f"train step {optimizer}, {label}: uniform layout against the ragged one",
                                        threads, "pyscall, the same widths laid out raggedly",
                                        compared(ragged_fn, ours_fn, repeat=repeat, block=block)))
                del ragged_fn
            del ours_fn
            # What the step's kernels alone reach: a bound on what less overhead could give.
            kernels_fn = kernels_step(d_max, rows, optimizer, Batches(pool), grad, widths)
            results.append(step_row(f"train step {optimizer}, {label}: kernels alone (lookup + fused_update)",
                                    threads, torch_baseline(optimizer),
                                    compared(base_fn, kernels_fn, repeat=repeat, block=block)))
            del kernels_fn
            if floors:
                # What no kernel reading these lines can beat: the step's rows read once, nothing computed.
                emb = pyscall.Embedding(rows, d_max, widths=widths, optimizer=optimizer, lr=0.01)
                table = floor_table(emb)
                distance, times = timed_floor(base_fn, table, Batches(pool), threads, repeat, block,
                                              per_position=[grad])
                results.append(step_row(f"train step {optimizer}, {label}: read floor (one pass reading only every "
                                        f"cache line the step reads: {floor_reads(table, optimizer)}; prefetch "
                                        f"distance {distance})", threads, torch_baseline(optimizer), times))
                del emb, table
            del base_fn

    # Drop-in mode as the baseline's code has it (sparse=True + SparseAdam): torch's optimizer then updates
    # element-wise sparse gradients of the flat buffer, which costs more than its row-wise ones.
    grad = torch.randn(batch, 64)
    base_fn, _ = torch_step(64, rows, "adam", Batches(pool), grad)
    ours_fn = dropin_sparse_step(64, rows, Batches(pool), grad)
    results.append(step_row("train step, drop-in sparse=True + torch SparseAdam, all widths 64", threads,
                            torch_baseline("adam"), compared(base_fn, ours_fn, repeat=repeat, block=block)))
    del base_fn, ours_fn

    # A small batch: what the module and autograd add to a step shows most here.
    small = [torch.randint(0, rows, (64,)) for _ in range(batches)]
    grad = torch.randn(64, 64)
    for optimizer in ("adam", "sgd"):
        base_fn, _ = torch_step(64, rows, optimizer, Batches(small), grad)
        ours_fn, _ = pyscall_step(64, rows, optimizer, Batches(small), grad)
        results.append(step_row(f"train step {optimizer}, all widths 64, batch 64", threads,
                                torch_baseline(optimizer), compared(base_fn, ours_fn, repeat=repeat, block=block)))
        del base_fn, ours_fn

    # Lookups: bytes per second against index_select into a preallocated output at the same d_max.
    for label, d_max, widths in [("all widths 64", 64, None), ("all widths 256", 256, None),
                                 ("power law mean 16, d_max 256", 256, power_law_widths(rows, 16, 256))]:
        dense = torch.randn(rows, d_max)
        out = torch.empty(batch, d_max)
        emb = pyscall.Embedding(rows, d_max, widths=widths)
        bag = pyscall.EmbeddingBag(rows, d_max, widths=widths, mode="sum")
        read = sum(int(emb.widths[ids].sum()) for ids in pool) * 4 / len(pool)  # bytes of rows a call reads
        bag_offsets = torch.arange(0, batch, 8)
        with torch.no_grad():
            a, b, c = Batches(pool), Batches(pool), Batches(pool)
            (base, padded, pooled), alt = compared(
                lambda: torch.index_select(dense, 0, a(), out=out), lambda: emb(b()),
                lambda: bag(c(), bag_offsets), repeat=repeat, block=block)
            floor = []
            if floors:
                # The bag's rows read once, nothing added or written: what no pooled kernel can beat.
                a = Batches(pool)
                reads = " and their offsets and widths" if not bag._arena.uniform_width else ""
                distance, ((base_f, floor_s), alt_f) = timed_floor(
                    lambda: torch.index_select(dense, 0, a(), out=out), floor_table(bag, optimizer_state=False),
                    Batches(pool), threads, repeat, block)
                floor = [(f"pooled lookup read floor (one pass reading only every cache line of the rows{reads}; "
                          f"prefetch distance {distance})", base_f, floor_s, batch // 8 * d_max * 4, alt_f, read)]
            # The padded kernel without the module around it, in a run of its own against the same baseline.
            del bag
            table = emb._arena
            a, k = Batches(pool), Batches(pool)
            (base_k, kernel), alt_k = compared(
                lambda: torch.index_select(dense, 0, a(), out=out),
                lambda: backend_cpu.lookup(table.weight, table.offsets, table.widths, k(), d_max, table.uniform_width),
                repeat=repeat, block=block)
            rows_at_mean = []
            if widths is not None:
                # For scale, not pyscall: torch's own index_select on rows of the mean width (one cache line)
                # against the same baseline; random reads of short rows cost latency, not bytes.
                mean_width = round(float(widths.float().mean()))
                narrow, narrow_out = torch.randn(rows, mean_width), torch.empty(batch, mean_width)
                a, m = Batches(pool), Batches(pool)
                (base_m, at_mean), alt_m = compared(
                    lambda: torch.index_select(dense, 0, a(), out=out),
                    lambda: torch.index_select(narrow, 0, m(), out=narrow_out), repeat=repeat, block=block)
                rows_at_mean = [(f"index_select alone on a dense table of width {mean_width} (not pyscall; for "
                                 "scale)", base_m, at_mean, batch * mean_width * 4, alt_m, batch * mean_width * 4)]
                del narrow, narrow_out
        del dense, emb, table
        for kind, base, seconds, written, (alt_base, alt_ours), row_bytes in [
                ("padded lookup", base, padded, batch * d_max * 4, (alt[0], alt[1]), read),
                ("padded lookup kernel alone (backend_cpu.lookup)", base_k, kernel, batch * d_max * 4, alt_k, read),
                ("pooled lookup (sum, bags of 8)", base, pooled, batch // 8 * d_max * 4, (alt[0], alt[2]), read),
                *floor, *rows_at_mean]:
            base_bw = 2 * batch * d_max * 4 / base
            bw = (row_bytes + written) / seconds
            results.append(dict(what=f"{kind}, {label}", threads=threads, baseline="index_select (same d_max)",
                                base_ms=base * 1e3, ours_ms=seconds * 1e3, speedup=bw / base_bw,
                                alternating=alt_base / alt_ours * (row_bytes + written) / (2 * batch * d_max * 4),
                                memory=f"{bw / 1e9:.1f} GB/s = {bw / bandwidth:.0%} of copy; "
                                       f"index_select {base_bw / 1e9:.1f} GB/s"))
    results += fbgemm_rows(rows, pool, repeat, block, threads)
    return results


def fbgemm_rows(rows: int, pool: list, repeat: int, block: int, threads: int) -> list[dict]:
    """FBGEMM's CPU TBE (fbgemm-gpu-cpu, a benchmark baseline only) on the optimizers it has on the CPU."""
    try:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            ComputeDevice, SplitTableBatchedEmbeddingBagsCodegen)
    except ImportError:
        return []
    results = []
    d = 64
    batch = len(pool[0])
    grad = torch.randn(batch, d)
    bag_offsets = torch.arange(batch + 1)  # one id per bag: the same rows as a padded lookup
    for ours_name, fb_opt in (("sgd", EmbOptimType.EXACT_SGD), ("rowwise_adagrad", EmbOptimType.EXACT_ROWWISE_ADAGRAD)):
        tbe = SplitTableBatchedEmbeddingBagsCodegen([(rows, d, EmbeddingLocation.HOST, ComputeDevice.CPU)],
                                                    optimizer=fb_opt, learning_rate=0.01,
                                                    pooling_mode=PoolingMode.SUM)
        ours_fn, _ = pyscall_step(d, rows, ours_name, Batches(pool), grad)
        ids = Batches(pool)
        times = compared(lambda: tbe(ids(), bag_offsets).backward(grad), ours_fn, repeat=repeat, block=block)
        del tbe, ours_fn
        results.append(step_row(f"train step {ours_name}, all widths 64", threads, f"FBGEMM CPU TBE {fb_opt.name}",
                                times))
    return results


def cpu_model() -> str:
    """The CPU's model name (Linux), else the architecture: results differ much between machines."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=10, help="rounds of blocks")
    parser.add_argument("--block", type=int, default=8, help="calls of one side in a row")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batches", type=int, default=64,
                        help="random batches taken in turn (1: the same rows every step, in cache)")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    lines = [f"pyscall {pyscall.__version__}, torch {torch.__version__}, {cpu_model()}, "
             f"{args.rows:,} rows, batch {args.batch:,} ({args.batches} batches in turn), median of "
             f"{args.repeat * args.block} calls in blocks of {args.block} (ms and ratio) and of as many "
             f"alternating calls (alternating ratio)",
             "", "| what | threads | baseline | baseline ms | pyscall ms | ratio | alternating ratio | "
                 "memory / bandwidth |",
             "|---|---|---|---|---|---|---|---|"]
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        bandwidth = copy_bandwidth(args.repeat)
        lines.append(f"| memory copy | {threads} | | | | | | {bandwidth / 1e9:.1f} GB/s (read+write) |")
        for r in run(args.rows, args.batch, args.repeat, args.block, threads, bandwidth, args.batches):
            lines.append(f"| {r['what']} | {r['threads']} | {r['baseline']} | {r['base_ms']:.3f} | "
                         f"{r['ours_ms']:.3f} | {r['speedup']:.1f}x | {r['alternating']:.1f}x | {r['memory']} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"Command: python bench/bench_embedding.py --rows {args.rows} --batch {args.batch} "
                    f"--repeat {args.repeat} --block {args.block} --threads {args.threads} --batches {args.batches}\n"
                    f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
                    f"load average {load:.2f} before the run)\n\n{text}\n")


if __name__ == "__main__":
    main()
