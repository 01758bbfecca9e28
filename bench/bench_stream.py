"""Wall time per segment and peak memory of the streaming trainer (LightGCN and MF).

    python bench/bench_stream.py                                    # embedded Online Retail, both models
    python bench/bench_stream.py --data synthetic:1000000,1000000,5000000 --models mf --segments 3 \
        --eval-users 2000
    python bench/bench_stream.py --threads 1

Runs one policy (uniform by default) through `StreamTrainer` for each model and prints, per segment, the
vocabulary, training rows, batches run, wall time, and the process's peak RSS so far; then the mean wall
time per segment and the peak RSS. Each model runs in a fresh subprocess so peak RSS is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from pyscall.app.train import TrainConfig


def _one(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    from pyscall.app.cli import _load_interactions
    from pyscall.app.data.stream import prepare_stream
    from pyscall.app.scall.policies import make_policy
    from pyscall.app.train import Budget, StreamTrainer

    start = time.perf_counter()
    inter = _load_interactions(argparse.Namespace(data=args.data, format=None, seed=0))
    seg_kw = dict(segmentation="count", n_segments=args.segments) if args.segments else \
        dict(segmentation="time", window="month")
    stream = prepare_stream(inter, **seg_kw, seed=0)
    prep = time.perf_counter() - start
    cfg = TrainConfig(model=args.model, d_max=args.d_max, batch_size=args.batch_size, max_batches=args.max_batches,
                      eval_every=args.eval_every, eval_users=args.eval_users)
    trainer = StreamTrainer(stream, make_policy(args.policy), cfg, Budget(mean_size=args.mean_size))
    rows = []
    for _ in stream.segments:
        row = trainer.run_segment()
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("segment", "n_users", "n_items", "n_train", "batches", "wall_s",
                                              "recall@20", "eval_users", "bytes", "peak_rss_mb")}), flush=True)
    print(json.dumps({"summary": True, "model": args.model, "source": stream.source, "prepare_s": prep,
                      "segments": len(rows), "mean_wall_s": sum(r["wall_s"] for r in rows) / len(rows),
                      "total_s": time.perf_counter() - start,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="online-retail")
    p.add_argument("--models", default="lightgcn,mf")
    p.add_argument("--model", help=argparse.SUPPRESS)  # set for the per-model subprocess
    p.add_argument("--policy", default="uniform")
    p.add_argument("--segments", type=int, default=None, help="equal-count segments (default: monthly)")
    p.add_argument("--mean-size", type=float, default=16)
    p.add_argument("--d-max", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--max-batches", type=int, default=TrainConfig.max_batches)
    p.add_argument("--eval-every", type=int, default=TrainConfig.eval_every)
    p.add_argument("--eval-users", type=int, default=None, help="evaluate at most this many users a segment")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.model:
        _one(args)
        return
    print(f"threads={args.threads}", flush=True)
    for model in args.models.split(","):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--model", model]
        subprocess.run(cmd, check=True, env=os.environ)


if __name__ == "__main__":
    main()
