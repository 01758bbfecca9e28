"""The sharded table on 1, 2 and 4 gloo processes of this machine: lookup and train-step throughput (ratios to
1 process, measured in the same run), bytes sent per lookup against the minimum, and the per-row costs that the
paper estimate for 10^9 rows on 64 ranks is built from.

    python bench/bench_distributed.py [--rows 200000] [--batch 4096] [--steps 20] [--out bench/results/distributed.md]

Each process holds rows/world rows of a table of `rows` rows (d_max 64, lognormal widths of mean ~16, fused Adam)
and looks up `batch` ids a step (uniform ids: the same load on every rank), 1 thread per process. Throughput is
ids looked up by all ranks together per second (the slowest rank's time). On a 2-core machine 4 processes share
2 cores: the 4-process figure is an upper bound on the cost of that many ranks, not a scaling measurement.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

D_MAX = 64


def _worker(rank, world, store, args, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    from pyscall.distributed import WIRE, ShardedEmbedding
    rng = np.random.default_rng(0)
    w = np.clip(np.rint(rng.lognormal(np.log(16.0) - 0.5, 1.0, args.rows)), 1, D_MAX).astype(np.int32)
    table = ShardedEmbedding(args.rows, D_MAX, widths=torch.from_numpy(w), optimizer="adam", lr=1e-3)
    gen = torch.Generator().manual_seed(1 + rank)
    batches = [torch.randint(0, args.rows, (args.batch,), generator=gen) for _ in range(args.steps)]

    def lookup(ids):
        with torch.no_grad():
            table(ids)

    def train(ids):
        table(ids).sum().backward()

    result = {}
    for name, fn in (("lookup", lookup), ("train", train)):
        for ids in batches[:3]:  # warm-up
            fn(ids)
        dist.barrier()
        WIRE.reset()
        t0 = time.perf_counter()
        for ids in batches:
            fn(ids)
        dist.barrier()
        result[name] = (time.perf_counter() - t0) / args.steps
        result[name + "_in_collectives"] = WIRE.seconds / args.steps
    if world == 1:
        # The same kernels without the sharded module around them (its 1-rank table holds every row), timed
        # step by step alternately with the sharded table so that a busy machine slows both alike.
        plain = {"lookup": lambda ids: table.local(ids).detach(),
                 "train": lambda ids: table.local(ids).sum().backward()}
        for name, fn in (("lookup", lookup), ("train", train)):
            spent = {"sharded": 0.0, "plain": 0.0}
            for ids in batches:
                for kind, call in (("sharded", fn), ("plain", plain[name])):
                    t0 = time.perf_counter()
                    call(ids)
                    spent[kind] += time.perf_counter() - t0
            result["plain_" + name] = spent["plain"] / args.steps
            result["alternate_" + name] = spent["sharded"] / args.steps
    # Bytes this rank sends in one lookup and one train step, against the minimum: ids going to other ranks
    # (8 B each) and the rows coming back at their real widths (4 B an element); a train step sends the rows'
    # gradients back at the same widths.
    ids = batches[0]
    remote = ids[ids % world != rank]
    real = int(torch.from_numpy(w)[remote].sum())
    minimum = 8 * remote.numel() + 4 * real
    WIRE.reset()
    lookup(ids)
    result["lookup_bytes"] = WIRE.sent
    WIRE.reset()
    train(ids)
    result["train_bytes"] = WIRE.sent
    result["lookup_min"] = minimum
    # Rows this rank serves come from every rank; what it sends in a lookup is those rows, so per-rank bytes
    # average out over ranks: the totals below are summed over ranks.
    served = [None] * world
    padded = 8 * remote.numel() + 4 * D_MAX * remote.numel()  # the same rows padded to d_max on the wire
    dist.all_gather_object(served, (result["lookup_bytes"], result["train_bytes"], minimum, padded))
    result["sum_lookup_bytes"] = sum(s[0] for s in served)
    result["sum_train_bytes"] = sum(s[1] for s in served)
    result["sum_min"] = sum(s[2] for s in served)
    result["sum_padded"] = sum(s[3] for s in served)
    result["mem"] = table.memory_stats()["rank"]
    times = [None] * world
    dist.all_gather_object(times, (result["lookup"], result["train"], result["lookup_in_collectives"],
                                   result["train_in_collectives"]))
    result["lookup"] = max(t[0] for t in times)
    result["train"] = max(t[1] for t in times)
    # Share of a step spent inside the all-to-alls (sending, and waiting for the slowest rank), mean over ranks.
    result["lookup_comm_share"] = sum(t[2] / t[0] for t in times) / world
    result["train_comm_share"] = sum(t[3] / t[1] for t in times) / world
    if rank == 0:
        queue.put(result)
    dist.destroy_process_group()


def run(world, args):
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, os.path.join(tmp, "store"), args, queue), nprocs=world, join=True)
    return queue.get()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--worlds", default="1,2,4")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = {world: run(world, args) for world in map(int, args.worlds.split(","))}
    base = results[min(results)]
    lines = [f"rows {args.rows}, d_max {D_MAX}, mean width ~16 (lognormal), fused Adam, batch {args.batch} ids a "
             f"rank, {args.steps} steps, 1 thread a process, gloo over loopback; torch {torch.__version__}",
             "", "| processes | lookup ids/s (all ranks) | ratio | in all-to-all | train ids/s | ratio | "
             "in all-to-all | bytes sent/lookup (sum) | minimum | ratio | padded to d_max would be | "
             "train step bytes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for world, r in results.items():
        total = world * args.batch
        lk, tr = total / r["lookup"], total / r["train"]
        lk0, tr0 = args.batch / base["lookup"], args.batch / base["train"]
        ratio = f"{r['sum_lookup_bytes'] / r['sum_min']:.3f}" if r["sum_min"] else "-"
        lines.append(f"| {world} | {lk:,.0f} | {lk / lk0:.2f} | {r['lookup_comm_share']:.0%} | {tr:,.0f} | "
                     f"{tr / tr0:.2f} | {r['train_comm_share']:.0%} | "
                     f"{r['sum_lookup_bytes']:,} | {r['sum_min']:,} | {ratio} | "
                     f"{r['sum_padded']:,} | {r['sum_train_bytes']:,} |")
    if 1 in results:
        one, b = results[1], args.batch
        lines += ["", f"The 1-process sharded table against its own `pyscall.Embedding` (the same kernels, no "
                  f"exchange), timed alternately: lookup {one['alternate_lookup'] / b * 1e9:.0f} against "
                  f"{one['plain_lookup'] / b * 1e9:.0f} ns a row, lookup + fused Adam step "
                  f"{one['alternate_train'] / b * 1e9:.0f} against {one['plain_train'] / b * 1e9:.0f} ns a row."]
    text = "\n".join(lines)
    print(text)
    print(json.dumps({str(k): v for k, v in results.items()}, default=str))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
