"""CPU kernels of pyscall.backends.cpu against torch baselines and the machine's copy bandwidth,
all measured in the same run, at 1 and 2 threads.

    .venv/bin/python bench/bench_kernels_cpu.py [--rows 1000000] [--batch 4096] [--reps 30]

Prints one table per thread count: best-of-reps milliseconds per call (the machine is shared, so
the minimum is the stable figure), and the ratio to the baseline
(speed-up, > 1 is faster) or the achieved bandwidth (rows read + output written) in GB/s.
"""
import argparse
import time

import numpy as np
import torch

from pyscall.backends import cpu as K


def best_ms(fn, reps):
    fn()  # warm-up (page faults, first-touch of state)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def power_law_widths(rows, mean, d_max, g, alpha=1.2):
    """Pareto widths clamped to [1, d_max], scale tuned so the mean is `mean`."""
    u = torch.rand(rows, generator=g, dtype=torch.float64)
    scale = mean / 3
    for _ in range(30):
        widths = torch.clamp(torch.floor(scale * u ** (-1 / alpha)), 1, d_max)
        scale *= mean / widths.mean().item()
    return widths.to(torch.int32)


class Ragged:
    """A ragged table with contiguous rows and the optimizer state for `optimizer`."""

    def __init__(self, widths, d_max, optimizer, g):
        self.widths = widths
        self.d_max = d_max
        sizes = widths.long()
        self.offsets = torch.cumsum(sizes, 0) - sizes
        self.weight = torch.randn(int(sizes.sum()), generator=g)
        self.state = [torch.zeros_like(self.weight) for _ in range({"adam": 2, "sgd": 0}[optimizer])]
        self.optimizer = optimizer
        self.step_count = 0

    def step(self, ids, grad_out):
        """Forward (padded lookup) + fused backward/update, as the fused module will run it."""
        K.lookup(self.weight, self.offsets, self.widths, ids, self.d_max)
        self.step_count += 1
        K.fused_update(grad_out, ids, None, None, None, self.offsets, self.widths, self.weight,
                       self.state, None, self.optimizer, lr=0.01, eps=1e-8, beta1=0.9,
                       beta2=0.999, weight_decay=0.0, step=self.step_count)


def torch_step(emb, opt, ids, grad_out):
    out = emb(ids)
    out.backward(grad_out)
    opt.step()
    opt.zero_grad(set_to_none=True)


def bench_updates(rows, batch, reps, g, rows_out):
    batches = [torch.randint(0, rows, (batch,), generator=g) for _ in range(8)]
    it = iter(range(10**9))

    def cycle(fn, d):
        grads = [torch.randn(batch, d, generator=g) for _ in range(2)]

        def run():
            k = next(it)
            fn(batches[k % len(batches)], grads[k % 2])
        return run

    for label, widths, d_max, optimizer in [
        ("fused Adam, widths = d_max = 64", torch.full((rows,), 64, dtype=torch.int32), 64, "adam"),
        ("fused SGD, widths = d_max = 64", torch.full((rows,), 64, dtype=torch.int32), 64, "sgd"),
        ("fused Adam, power-law widths mean 16, d_max 256",
         power_law_widths(rows, 16, 256, g), 256, "adam"),
    ]:
        table = Ragged(widths, d_max, optimizer, g)
        ours = best_ms(cycle(table.step, d_max), reps)
        del table
        emb = torch.nn.Embedding(rows, d_max, sparse=True)
        opt = (torch.optim.SparseAdam(emb.parameters(), lr=0.01) if optimizer == "adam"
               else torch.optim.SGD(emb.parameters(), lr=0.01))
        base = best_ms(cycle(lambda i, go: torch_step(emb, opt, i, go), d_max), reps)
        del emb, opt
        name = "nn.Embedding(sparse) + " + ("SparseAdam" if optimizer == "adam" else "SGD")
        rows_out.append((label + f" [mean width {widths.double().mean():.1f}]", ours,
                         f"{base / ours:.1f}x vs {name} ({base:.2f} ms, d={d_max})"))


def bench_lookups(rows, batch, reps, g, rows_out, copy_gbs):
    # a fresh batch per call (8 in turn), so rows come from memory rather than from the cache
    batches = [torch.randint(0, rows, (batch,), generator=g) for _ in range(8)]
    turn = iter(range(10**9))

    def next_ids():
        return batches[next(turn) % len(batches)]

    ids = batches[0]  # for the byte counts: every batch has the same size and distribution
    bag_offsets = torch.arange(0, batch + 1, 16)  # bags of 16
    for label, widths, d_max in [
        ("d_max 64, widths 64", torch.full((rows,), 64, dtype=torch.int32), 64),
        ("d_max 256, power-law widths mean 16", power_law_widths(rows, 16, 256, g), 256),
    ]:
        table = Ragged(widths, d_max, "sgd", g)
        read = 4 * widths[ids].long().sum().item()
        out_bytes = 4 * batch * d_max
        t = best_ms(lambda: K.lookup(table.weight, table.offsets, widths, next_ids(), d_max), reps)
        gbs = (read + out_bytes) / t / 1e6
        rows_out.append((f"padded lookup, {label}", t,
                         f"{gbs:.1f} GB/s = {gbs / copy_gbs:.0%} of copy"))
        pooled_out = 4 * (len(bag_offsets) - 1) * d_max
        t = best_ms(lambda: K.pooled(table.weight, table.offsets, widths, next_ids(), bag_offsets, "sum",
                                       None, d_max), reps)
        gbs = (read + pooled_out) / t / 1e6
        rows_out.append((f"pooled sum (bags of 16), {label}", t,
                         f"{gbs:.1f} GB/s = {gbs / copy_gbs:.0%} of copy"))
        del table
        dense = torch.randn(rows, d_max, generator=g)
        out = torch.empty(batch, d_max)
        t = best_ms(lambda: torch.index_select(dense, 0, next_ids(), out=out), reps)
        gbs = 2 * 4 * batch * d_max / t / 1e6
        rows_out.append((f"torch.index_select, dense d={d_max}", t,
                         f"{gbs:.1f} GB/s = {gbs / copy_gbs:.0%} of copy"))
        t = best_ms(lambda: torch.nn.functional.embedding_bag(next_ids(), dense, bag_offsets[:-1],
                                                                mode="sum"), reps)
        gbs = (4 * batch * d_max + 4 * (len(bag_offsets) - 1) * d_max) / t / 1e6
        rows_out.append((f"F.embedding_bag sum, dense d={d_max}", t, f"{gbs:.1f} GB/s"))
        del dense


def copy_bandwidth(reps):
    """Read + write bandwidth of a 256 MiB copy (torch, and numpy single-threaded)."""
    src = torch.randn(64 * 2**20)
    dst = torch.empty_like(src)
    t = best_ms(lambda: dst.copy_(src), reps)
    torch_gbs = 2 * src.numel() * 4 / t / 1e6
    a, b = src.numpy(), dst.numpy()
    t = best_ms(lambda: np.copyto(b, a), reps)
    return torch_gbs, 2 * src.numel() * 4 / t / 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    for threads in args.threads:
        torch.set_num_threads(threads)
        g = torch.Generator().manual_seed(0)
        torch_gbs, numpy_gbs = copy_bandwidth(args.reps)
        rows_out = [("memory copy 256 MiB, torch copy_", None, f"{torch_gbs:.1f} GB/s"),
                    ("memory copy 256 MiB, numpy copyto (1 thread)", None, f"{numpy_gbs:.1f} GB/s")]
        bench_updates(args.rows, args.batch, args.reps, g, rows_out)
        bench_lookups(args.rows, args.batch, args.reps, g, rows_out, torch_gbs)
        print(f"\n== {threads} thread(s), {args.rows} rows, batch {args.batch}, "
              f"best of {args.reps} ==")
        for name, ms, note in rows_out:
            print(f"{name:<62} {'' if ms is None else f'{ms:8.3f} ms'}  {note}")


if __name__ == "__main__":
    main()
