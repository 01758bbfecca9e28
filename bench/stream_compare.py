"""Size policies against each other over seeds: run `pyscall stream --compare ...` per (budget, seed), or
read runs already made, and write one table of mean and spread over seeds (markdown and JSON).

    python bench/stream_compare.py --mean-sizes 4 16 --seeds 0 1 2 --runs runs/compare \
        --out bench/results/scall_online_retail.md              # runs what is missing, then summarises
    python bench/stream_compare.py --no-run --from runs/a runs/b ... --out ...   # summarise runs made apart

Each run is `pyscall stream --compare <policies> --d-max 256 --mean-size M --seed S --threads 1` on the
embedded stream with the default protocol (70/10/20 split, validation for early stopping and rewards,
full-catalogue ranking); its folder is <runs>/m<M>_s<S>.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from pyscall.app.report import summarize

POLICIES = "scall,uniform,freq-rule,fixed-alpha,full"


def run_dir(runs: Path, mean_size: float, seed: int) -> Path:
    return runs / f"m{mean_size:g}_s{seed}"


def ensure_run(runs: Path, mean_size: float, seed: int, policies: str, d_max: int, extra: list) -> Path:
    out = run_dir(runs, mean_size, seed)
    if not (out / "results.json").exists():
        cmd = [sys.executable, "-m", "pyscall.app.cli", "stream", "--compare", policies, "--d-max", str(d_max),
               "--mean-size", f"{mean_size:g}", "--seed", str(seed), "--threads", "1", "--no-progress",
               "--out", str(out), *extra]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    return out


def per_policy(rows: list) -> dict:
    """Per policy: mean Recall@20 / NDCG@20 over segments t >= 1, the search and training seconds, the
    worst segment's search/train ratio and the most bytes over budget."""
    out = {}
    for policy, s in summarize(rows).items():
        mine = [r for r in rows if r["policy"] == policy]
        scored = [r for r in mine if r["segment"] >= 1]
        out[policy] = {"recall@20": s["recall@20"], "ndcg@20": s["ndcg@20"],
                       "valid_fitness": float(np.nanmean([r["valid_fitness"] for r in scored])),
                       "search_s": sum(r.get("search_s", 0.0) for r in scored),
                       "train_s": sum(r.get("train_s", 0.0) for r in scored),
                       "max_search_over_train": max((r.get("search_s", 0.0) / max(r.get("train_s", 0.0), 1e-9)
                                                     for r in scored), default=0.0),
                       "over_budget_bytes": max(max(0, r["bytes"] - r["budget_bytes"]) if r["budget_bytes"] else 0
                                                for r in mine)}
    return out


def collect(folders) -> dict:
    """{(mean size, seed): rows} from runs' results.json; a policy found in a later folder replaces it."""
    cells = {}
    for folder in folders:
        results = json.loads((Path(folder) / "results.json").read_text())
        key = (float(results["options"]["mean_size"]), int(results["options"]["seed"]))
        rows = cells.setdefault(key, [])
        new = {r["policy"] for r in results["segments"]}
        rows[:] = [r for r in rows if r["policy"] not in new] + results["segments"]
    return cells


def summarise(cells: dict, mean_sizes, seeds) -> tuple[str, dict]:
    table, lines = {}, []
    for m in mean_sizes:
        per_seed = [per_policy(cells[(float(m), s)]) for s in seeds]
        table[f"{m:g}"] = {}
        lines += [f"\n### Mean size {m:g} (d_max 256), seeds {', '.join(map(str, seeds))}\n",
                  "| policy | Recall@20 mean | spread (min-max) | NDCG@20 mean | spread (min-max) | validation "
                  "fitness | search s (t>=1) | train s (t>=1) | worst search/train of a segment | bytes over budget |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for policy in per_seed[0]:
            vals = {k: np.array([p[policy][k] for p in per_seed]) for k in per_seed[0][policy]}
            table[f"{m:g}"][policy] = {k: v.tolist() for k, v in vals.items()}
            r, n = vals["recall@20"], vals["ndcg@20"]
            lines.append(f"| {policy} | {r.mean():.4f} | {r.min():.4f}-{r.max():.4f} | {n.mean():.4f} | "
                         f"{n.min():.4f}-{n.max():.4f} | {vals['valid_fitness'].mean():.4f} | "
                         f"{vals['search_s'].mean():.0f} | "
                         f"{vals['train_s'].mean():.0f} | {vals['max_search_over_train'].max():.2f} | "
                         f"{int(vals['over_budget_bytes'].max())} |")
        for rival in ("uniform", "fixed-alpha"):
            if "scall" in per_seed[0] and rival in per_seed[0]:
                wins = sum(p["scall"]["recall@20"] > p[rival]["recall@20"] for p in per_seed)
                valid = sum(p["scall"]["valid_fitness"] > p[rival]["valid_fitness"] for p in per_seed)
                lines.append(f"\nscall above {rival} in Recall@20 (test) in {wins} of {len(seeds)} seeds, in "
                             f"validation fitness in {valid} of {len(seeds)}.")
    return "\n".join(lines) + "\n", table


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mean-sizes", type=float, nargs="+", default=[4.0, 16.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--policies", default=POLICIES)
    p.add_argument("--d-max", type=int, default=256)
    p.add_argument("--runs", default="runs/compare", help="one folder per (mean size, seed) under this")
    p.add_argument("--no-run", action="store_true", help="only summarise runs already made")
    p.add_argument("--from", dest="folders", nargs="+", default=None,
                   help="summarise these run folders (default: the folders under --runs)")
    p.add_argument("--out", default=None, help="markdown report; a .json with the numbers is written beside it")
    args, extra = p.parse_known_args(argv)
    runs = Path(args.runs)
    if not args.no_run:
        for m in args.mean_sizes:
            for s in args.seeds:
                ensure_run(runs, m, s, args.policies, args.d_max, extra)
    folders = args.folders or [run_dir(runs, m, s) for m in args.mean_sizes for s in args.seeds]
    text, table = summarise(collect(folders), args.mean_sizes, args.seeds)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# Size policies on the embedded Online Retail stream\n\nGenerated by `python "
                  f"bench/stream_compare.py {' '.join(argv if argv is not None else sys.argv[1:])}`. Mean over "
                  "segments t >= 1 of each run, then mean and min-max over seeds. Times: seconds summed over "
                  "segments t >= 1 (search: the agent's probes; train: the deployed training).\n")
        out.write_text(header + text)
        out.with_suffix(".json").write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
