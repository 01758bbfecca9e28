"""`pyscall stream`: run size policies over a stream of interactions, segment by segment.

    pyscall stream                                      # embedded Online Retail stream, default budget
    pyscall stream --policy scall                       # the same with the SCALL agent
    pyscall stream --preset paper                       # the SCALL paper's setting on the same data
    pyscall stream --compare uniform,freq-rule,fixed-alpha --mean-size 8 --out runs/cmp
    pyscall stream --data ratings.dat --format movielens --budget-mb 2 --model lightgcn
    pyscall stream --data synthetic:100000,50000,2000000 --model mf --resume

Writes results.csv, results.json, quality.png and sizes.png to --out, and a checkpoint per policy after
every segment (out/checkpoints/<policy>.pt); --resume continues from them.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch

from . import checkpoint
from .report import summarize, summary_table, table_header, table_row, write_all
from .scall.agent import ALPHA_SCALES, PROBES, REWARDS, AgentConfig
from .scall.sac import SACConfig
from .scall.policies import POLICIES, make_policy
from .train import Budget, StreamTrainer, TrainConfig

# Test hook: PYSCALL_TEST_EXIT_AFTER_SEGMENT=k kills the process right after the checkpoint of segment k.
EXIT_AFTER_SEGMENT_ENV = "PYSCALL_TEST_EXIT_AFTER_SEGMENT"

DEFAULT_MEAN_SIZE = 16.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyscall", description="ragged embedding tables for streaming "
                                     "recommenders (SCALL)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stream", help="train and evaluate size policies over a stream, segment by segment",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--data", default="online-retail",
                      help="a path, 'online-retail' (embedded UCI Online Retail, CC BY 4.0) or "
                           "'synthetic:N_USERS,N_ITEMS,N_INTERACTIONS'")
    data.add_argument("--format", default=None,
                      choices=["movielens", "amazon", "yelp", "csv", "online-retail", "synthetic"],
                      help="file format (default: detected from the path)")
    data.add_argument("--user-col", help="--format csv: user column")
    data.add_argument("--item-col", help="--format csv: item column")
    data.add_argument("--time-col", help="--format csv: time column")
    data.add_argument("--time-format", help="--format csv: strptime format (default: unix seconds)")
    data.add_argument("--sep", default=None, help="--format csv: field delimiter (default: tab if the header "
                      "has one, else comma); typed headers such as 'user_id:token' match --user-col user_id")
    data.add_argument("--dedup", default="none", choices=["none", "first"],
                      help="first: keep each (user, item) pair at its first interaction only (the paper's setting)")
    data.add_argument("--k-core", type=int, default=None, help="k-core filter before segmenting")
    data.add_argument("--segmentation", default="time", choices=["new-entities", "time", "count"])
    data.add_argument("--window", default="month", help="--segmentation time: day, week, month or seconds")
    data.add_argument("--threshold", type=int, default=15000,
                      help="--segmentation new-entities: new users+items per segment")
    data.add_argument("--n-segments", type=int, default=None, help="--segmentation count: segments")
    data.add_argument("--replay", type=float, default=0.2, help="replayed share of each segment (t >= 1)")
    data.add_argument("--protocol", default="split", choices=["split", "paper"],
                      help="split: train/valid/test 70/10/20; paper: 80/20, test also early-stops (leaky)")

    budget = p.add_argument_group("budget and sizes").add_mutually_exclusive_group()
    budget.add_argument("--budget-mb", type=float, default=None,
                        help="fixed budget in MB of float32 parameters (P = MB x 250,000)")
    budget.add_argument("--mean-size", type=float, default=None,
                        help=f"budget as a mean width per row, P = c x (users + items) "
                             f"(default {DEFAULT_MEAN_SIZE:g} when no budget is given)")
    sizes = p.add_argument_group("policies")
    # Not scall yet: with the agent the default run took 15.7 minutes here (11.2 CPU-minutes), over its 10.
    sizes.add_argument("--policy", default="freq-rule", choices=sorted(POLICIES),
                       help="scall: the learned agent; the others are fixed rules (README)")
    sizes.add_argument("--compare", default=None,
                       help="comma-separated policies run on the same stream, e.g. uniform,freq-rule,fixed-alpha")
    sizes.add_argument("--d-max", type=int, default=64)
    sizes.add_argument("--d-min", type=int, default=1)
    sizes.add_argument("--beta", type=float, default=0.5, help="freq-rule: width ~ (frequency + 1) ** beta")
    sizes.add_argument("--alpha", type=float, default=0.5, help="fixed-alpha: power-law shape (users and items)")
    sizes.add_argument("--user-share", type=float, default=0.5, help="fixed-alpha: share of P for users")

    agent = p.add_argument_group("SCALL agent (--policy scall)")
    adef = AgentConfig()
    agent.add_argument("--probe", default=adef.probe, choices=list(PROBES),
                       help="replay: a probe re-runs the previous segment's deployment (its starting tables "
                            "resized to the sampled sizes); warm: the current model cut to the sampled sizes; "
                            "fresh: a new model per probe (the paper code)")
    agent.add_argument("--probe-batches", type=int, default=adef.probe_batches, help="batches of one probe")
    agent.add_argument("--search-steps", default=f"{adef.min_steps},{adef.max_steps}", metavar="MIN,MAX",
                       help="probes per segment: at least MIN, then until the action settles, at most MAX")
    agent.add_argument("--alpha-scale", default=adef.alpha_scale, choices=list(ALPHA_SCALES),
                       help="how the actor output maps to (user share, alpha_user, alpha_item): prior: 0.5 is "
                            "fixed-alpha's (0.5, 0.5, 0.5), the ends 0/1 and alpha 0.1/30, alphas in log; log: "
                            "log-uniform alphas; linear: the paper's alpha = 0.1 + a * 29.9")
    agent.add_argument("--reward", default=None, choices=list(REWARDS),
                       help="log-uniform: log of the probe's fitness over a uniform-size probe's; paper: over "
                            "the deployed model's, rescaled (default: paper under --protocol paper)")
    agent.add_argument("--state-groups", type=int, default=adef.groups, help="rank groups per frequency profile")
    agent.add_argument("--reward-scale", type=float, default=adef.reward_scale,
                       help="log-uniform rewards are multiplied by this")
    agent.add_argument("--agent-updates", type=int, default=adef.sac.updates_per_step,
                       help="SAC updates after each probe")

    train = p.add_argument_group("training")
    defaults = TrainConfig()
    train.add_argument("--model", default=defaults.model, choices=["lightgcn", "mf"])
    train.add_argument("--layers", type=int, default=defaults.layers)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--max-batches", type=int, default=defaults.max_batches, help="per segment")
    train.add_argument("--eval-every", type=int, default=defaults.eval_every)
    train.add_argument("--patience", type=int, default=defaults.patience)
    train.add_argument("--lr", type=float, default=defaults.lr)
    train.add_argument("--eval-users", type=int, default=None,
                       help="evaluate a seeded sample of at most this many users per segment (huge streams)")
    train.add_argument("--device", default="cpu")
    train.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    train.add_argument("--seed", type=int, default=0)

    run = p.add_argument_group("output")
    run.add_argument("--out", default="runs/stream", help="output folder")
    run.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="a named setting; options given explicitly override it. paper: the SCALL paper's "
                        "setting on the embedded data (" + " ".join(_preset_words("paper")) + ")")
    return parser


# The SCALL paper code's setting on the embedded Online Retail data: first purchase of each pair, 10-core,
# a segment per 1,500 new users + items, mean size 16, d_max 256, LightGCN with the paper code's training
# constants, its evaluation (--protocol paper) and its reward. Its deployments train up to 1,000 batches, so a
# 10-batch replay probe says little of them: warm probes and the log alpha scale, as measured in
# bench/results/scall_paper_setting.md.
PRESETS = {"paper": dict(data="online-retail", dedup="first", k_core=10, segmentation="new-entities",
                         threshold=1500, protocol="paper", mean_size=16.0, d_max=256, model="lightgcn",
                         batch_size=10_000, eval_every=200, patience=3, max_batches=1000, lr=0.03,
                         policy="scall", probe="warm", alpha_scale="log")}


def _preset_words(name: str) -> list:
    return [f"--{k.replace('_', '-')} {v}" for k, v in PRESETS[name].items()]


def parse_args(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "preset", None):
        parser._subparsers._group_actions[0].choices["stream"].set_defaults(**PRESETS[args.preset])
        args = parser.parse_args(argv)
    return args


def _load_interactions(args):
    from .data.loaders import load, load_online_retail
    from .data.synthetic import synthetic_stream
    if args.data == "online-retail" or args.format == "online-retail":
        return load_online_retail(None if args.data == "online-retail" else args.data)
    if args.data.startswith("synthetic:") or args.format == "synthetic":
        spec = args.data.split(":", 1)[-1]
        try:
            n_users, n_items, n_inter = (int(x) for x in spec.split(","))
        except ValueError:
            raise SystemExit(f"--data synthetic:N_USERS,N_ITEMS,N_INTERACTIONS expected, got {args.data!r}")
        return synthetic_stream(n_users, n_items, n_inter, seed=args.seed)
    kw = {}
    if args.format == "csv":
        kw = dict(user_col=args.user_col, item_col=args.item_col, time_col=args.time_col,
                  time_format=args.time_format, sep=args.sep)
    return load(args.data, format=args.format, **kw)


def _agent_config(args) -> AgentConfig:
    try:
        low, high = (int(x) for x in args.search_steps.split(","))
    except ValueError:
        raise SystemExit(f"--search-steps MIN,MAX expected, got {args.search_steps!r}")
    reward = args.reward or ("paper" if args.protocol == "paper" else "log-uniform")
    try:
        return AgentConfig(groups=args.state_groups, alpha_scale=args.alpha_scale, min_steps=low, max_steps=high,
                           probe_batches=args.probe_batches, probe=args.probe, reward=reward,
                           reward_scale=args.reward_scale, sac=SACConfig(updates_per_step=args.agent_updates))
    except ValueError as e:
        raise SystemExit(f"SCALL agent: {e}")


def _policy(name: str, args, log):
    options = {"freq-rule": dict(beta=args.beta),
               "fixed-alpha": dict(alpha_user=args.alpha, alpha_item=args.alpha, user_share=args.user_share),
               "scall": dict(config=_agent_config(args), seed=args.seed, log=log)}
    return make_policy(name, **options.get(name, {}))


def _progress(args):
    if args.no_progress:
        return None, None
    from tqdm.auto import tqdm
    return tqdm, (lambda total: tqdm(total=total, desc="batches", leave=False, unit="batch"))


def stream_command(args) -> int:
    from .data.stream import prepare_stream
    names = [n.strip() for n in args.compare.split(",") if n.strip()] if args.compare else [args.policy]
    for name in names:
        if name not in POLICIES:
            raise SystemExit(f"unknown policy {name!r} in --compare; expected some of {sorted(POLICIES)}")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.budget_mb is None and args.mean_size is None:
        args.mean_size = DEFAULT_MEAN_SIZE
    budget = Budget(megabytes=args.budget_mb, mean_size=args.mean_size)
    config = TrainConfig(model=args.model, d_max=args.d_max, d_min=args.d_min, layers=args.layers,
                         batch_size=args.batch_size, max_batches=args.max_batches, eval_every=args.eval_every,
                         patience=args.patience, lr=args.lr, eval_users=args.eval_users, device=args.device,
                         seed=args.seed)
    out = Path(args.out)
    tqdm, batch_bar = _progress(args)
    say = tqdm.write if tqdm else print

    started = time.perf_counter()
    inter = _load_interactions(args)
    stream = prepare_stream(inter, k_core=args.k_core, segmentation=args.segmentation, threshold=args.threshold,
                            window=int(args.window) if args.window.isdigit() else args.window,
                            n_segments=args.n_segments, replay=args.replay, protocol=args.protocol,
                            seed=args.seed, dedup=None if args.dedup == "none" else args.dedup)
    say(f"{stream.source}: {stream.n_users} users, {stream.n_items} items, {len(stream.segments)} segments "
        f"(prepared in {time.perf_counter() - started:.1f} s); model {args.model}, d_max {args.d_max}, "
        f"budget {budget.describe()}, policies {', '.join(names)}")
    if not stream.segments:
        raise SystemExit("the stream has no segments")

    rows, sizes, searches = [], {}, {}
    exit_after = os.environ.get(EXIT_AFTER_SEGMENT_ENV)
    say(table_header())
    for name in names:
        torch.manual_seed(args.seed)  # every policy starts from the same global RNG state
        trainer = StreamTrainer(stream, _policy(name, args, say), config, budget, batch_progress=batch_bar)
        ckpt = out / "checkpoints" / f"{name}.pt"
        if args.resume:
            state = checkpoint.load(ckpt)
            if state is not None:
                trainer.load_state_dict(state)
                for row in trainer.results:
                    say(table_row(row) + "  (from checkpoint)")
        elif ckpt.exists():
            ckpt.unlink()
        bar = tqdm(total=len(stream.segments), initial=trainer.next_segment, desc=name, unit="segment") \
            if tqdm else None
        while not trainer.done:
            row = trainer.run_segment()
            checkpoint.save(trainer.state_dict(), ckpt)
            say(table_row(row))
            if bar is not None:
                bar.update(1)
            if exit_after is not None and row["segment"] == int(exit_after):
                os._exit(3)
        if bar is not None:
            bar.close()
        rows.extend(trainer.results)
        if name == "scall":
            searches[name] = trainer.policy.history
        last = stream.segments[-1]
        user_w, item_w = trainer.widths()
        sizes[name] = (user_w.numpy(), last.user_frequency(), item_w.numpy(), last.item_frequency())

    payload = {"source": stream.source, "n_users": stream.n_users, "n_items": stream.n_items,
               "stream_config": stream.config, "budget": budget.describe(), "options": dict(vars(args)),
               "searches": searches, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "wall_s": time.perf_counter() - started}
    paths = write_all(out, rows, payload, sizes)
    say("\nmean over segments t >= 1\n" + summary_table(summarize(rows)))
    say(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - started:.1f} s; "
        f"peak RSS {payload['peak_rss_mb']:.0f} MB")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "stream":
        return stream_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
