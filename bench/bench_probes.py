"""How much each cheap SCALL probe keeps of what the faithful probe measures, and what it costs.

The faithful probe (the paper code's) trains a fresh model at the sampled sizes for 200 batches and scores it.
For one segment of a real stream and a fixed set of random actions, this script scores every action with
each probe and reports, against the faithful probe: the Spearman rank correlation of the fitnesses, whether
the best action is the same, and the seconds per probe, all measured in this one run:

- fresh-20:   a fresh model for 20 batches (the authors' own cut of their probe);
- warm-20, warm-10: the current model cut or zero-padded to the sizes, 20 or 10 batches;
- mf-fresh:   a fresh MF model for 200 batches instead of LightGCN (MF as a proxy);
- side-by-side: warm-20 with 4 probes trained in one pass (`Prober.fitness_many`): same fitnesses, the time.

Every probe of a `Prober` trains on one set of pre-drawn batches and negatives over one graph (reused).

    python bench/bench_probes.py --mean-size 4 --segment 3 --actions 8 --threads 1 --out bench/results/probes.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pyscall.app.data.loaders import load_online_retail
from pyscall.app.data.stream import prepare_stream
from pyscall.app.scall import make_policy
from pyscall.app.scall.agent import AgentConfig, action_to_shape, shape_sizes
from pyscall.app.scall.policies import SizeContext
from pyscall.app.train import Budget, StreamTrainer, TrainConfig


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def trainer_through(segment: int, model: str, mean_size: float, d_max: int, seed: int) -> StreamTrainer:
    stream = prepare_stream(load_online_retail(), segmentation="time", window="month", seed=seed)
    trainer = StreamTrainer(stream, make_policy("uniform"), TrainConfig(model=model, d_max=d_max, seed=seed),
                            Budget(mean_size=mean_size))
    for _ in range(segment + 1):
        trainer.run_segment()
    return trainer


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mean-size", type=float, default=4.0)
    p.add_argument("--d-max", type=int, default=256)
    p.add_argument("--segment", type=int, default=3, help="the searched segment D_{t-1} of the monthly stream")
    p.add_argument("--actions", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    trainer = trainer_through(args.segment, "lightgcn", args.mean_size, args.d_max, args.seed)
    seg = trainer.stream.segments[args.segment]
    rng = np.random.default_rng(args.seed)
    faithful = trainer.prober(seg, 200, start="fresh")
    ctx = SizeContext(seg.index, seg.user_frequency(), seg.item_frequency(), faithful.budget, 1, args.d_max, rng,
                      segment=seg)
    shapes = [action_to_shape(rng.random(3), AgentConfig()) for _ in range(args.actions)]
    sizes = [shape_sizes(ctx, shape) for shape in shapes]

    probers = {"faithful (fresh, 200 batches)": faithful,
               "fresh-20": trainer.prober(seg, 20, start="fresh"),
               "warm-20": trainer.prober(seg, 20, start="warm"),
               "warm-10": trainer.prober(seg, 10, start="warm")}
    fits, secs = {}, {}
    for name, prober in probers.items():
        fits[name], seconds = timed(lambda pr: [pr.fitness(u, i) for u, i in sizes], prober)
        secs[name] = seconds / len(sizes)
    warm = probers["warm-20"]
    together, seconds = timed(lambda: [f for k in range(0, len(sizes), 4) for f in warm.fitness_many(sizes[k:k + 4])])
    fits["warm-20 side-by-side (4 a pass)"], secs["warm-20 side-by-side (4 a pass)"] = together, seconds / len(sizes)

    mf = trainer_through(args.segment, "mf", args.mean_size, args.d_max, args.seed)
    fits["mf-fresh (200 batches)"], seconds = timed(
        lambda pr: [pr.fitness(u, i) for u, i in sizes], mf.prober(mf.stream.segments[args.segment], 200, start="fresh"))
    secs["mf-fresh (200 batches)"] = seconds / len(sizes)

    ref = fits["faithful (fresh, 200 batches)"]
    rows = []
    print(f"segment {args.segment} ({seg.n_users} users, {seg.n_items} items), mean size {args.mean_size:g}, "
          f"d_max {args.d_max}, {args.actions} random actions, {args.threads} thread(s)")
    print(f"{'probe':34} {'s/probe':>8} {'x faithful':>10} {'spearman':>9} {'same best':>9}")
    for name in fits:
        row = {"probe": name, "seconds_per_probe": secs[name], "time_vs_faithful": secs[name] / secs[next(iter(secs))],
               "spearman_vs_faithful": spearman(fits[name], ref),
               "same_best": bool(np.argmax(fits[name]) == np.argmax(ref)), "fitness": fits[name]}
        rows.append(row)
        print(f"{name:34} {row['seconds_per_probe']:8.3f} {row['time_vs_faithful']:10.3f} "
              f"{row['spearman_vs_faithful']:9.3f} {str(row['same_best']):>9}")
    result = {"command": " ".join(["python", *sys.argv]), "args": vars(args), "machine": platform.machine(),
              "torch": torch.__version__, "shapes (user share, alpha_user, alpha_item)": shapes, "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
