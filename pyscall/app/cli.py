"""`pyscall stream`: run size policies over a stream of interactions, segment by segment.

    pyscall stream                                      # the embedded Online Retail stream: the default comparison
    pyscall stream --policy scall                       # one policy: the SCALL agent
    pyscall stream --preset paper                       # the SCALL paper's setting on the same data
    pyscall stream --compare uniform,freq-rule,fixed-alpha --mean-size 8 --out runs/cmp
    pyscall stream --data ratings.dat --budget-mb 2 --model mf
    pyscall stream --data log.csv --user-col user_id --item-col item_id --time-col timestamp
    pyscall stream --data synthetic:100000,50000,2000000 --model mf --resume

Writes results.csv, results.json, quality.png and sizes.png to --out, and a checkpoint per policy after
every segment (out/checkpoints/<policy>.pt); --resume continues from them. An error prints one line and
exits non-zero (2: bad options, 1: the run failed); --debug (or PYSCALL_DEBUG=1) shows the traceback.
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
from .data.errors import DataFormatError
from .data.loaders import FORMATS, detect_format
from ..errors import BudgetExceededError, CheckpointError
from .report import summary_lines, table_header, table_row, write_all
from .scall.agent import ALPHA_SCALES, PROBES, REWARDS, AgentConfig
from .scall.policies import POLICIES, make_policy
from .scall.sac import SACConfig
from .train import Budget, BudgetError, StreamTrainer, TrainConfig

# What `pyscall stream` runs with no policy named: the SCALL agent against uniform sizes at the same tight
# budget (mean width 4 of d_max 256), where sizes matter (bench/results/scall_online_retail.md).
DEFAULT_MEAN_SIZE = 4.0
DEFAULT_D_MAX = 256
DEFAULT_COMPARE = "scall,uniform"
CSV_OPTIONS = ("user_col", "item_col", "time_col", "time_format", "sep")


class UsageError(Exception):
    """Options that cannot run: printed as one line, exit status 2 (as argparse's own errors)."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default once: not when it is None or a flag's False, nor when the help already states it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyscall", description="ragged embedding tables for streaming "
                                     "recommenders (SCALL)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stream", help="train and evaluate size policies over a stream, segment by segment",
                       formatter_class=_HelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--data", default="online-retail",
                      help="a path, 'online-retail' (embedded UCI Online Retail, CC BY 4.0) or "
                           "'synthetic:N_USERS,N_ITEMS,N_INTERACTIONS'")
    data.add_argument("--format", default=None, choices=list(FORMATS),
                      help="file format (default: detected from the path: u.data and *.dat are MovieLens, "
                           "*.json Amazon or Yelp, *.csv MovieLens by its header or else csv, *.tsv and *.inter csv)")
    data.add_argument("--user-col", help="csv: the user column's name in the header")
    data.add_argument("--item-col", help="csv: the item column's name")
    data.add_argument("--time-col", help="csv: the time column's name")
    data.add_argument("--time-format", help="csv: strptime format of the time column (default: unix seconds)")
    data.add_argument("--sep", default=None, help="csv: field delimiter (default: tab if the header has one, "
                      "else comma); typed headers such as 'user_id:token' match --user-col user_id")
    data.add_argument("--dedup", default="none", choices=["none", "first"],
                      help="first: keep each (user, item) pair at its first interaction only (the paper's setting)")
    data.add_argument("--k-core", type=int, default=None, help="k-core filter before segmenting")
    data.add_argument("--segmentation", default="time", choices=["new-entities", "time", "count"],
                      help="how the stream is cut into segments: by time window, by new users+items, or into "
                           "--n-segments equal parts")
    data.add_argument("--window", default="month", help="--segmentation time: day, week, month or seconds")
    data.add_argument("--threshold", type=int, default=15000,
                      help="--segmentation new-entities: new users+items per segment")
    data.add_argument("--n-segments", type=int, default=None, help="--segmentation count: segments")
    data.add_argument("--replay", type=float, default=0.2, help="replayed share of each segment (t >= 1)")
    data.add_argument("--protocol", default="split", choices=["split", "paper"],
                      help="split: train/valid/test 70/10/20; paper: 80/20, test also early-stops (leaky)")

    budget = p.add_argument_group("budget and sizes").add_mutually_exclusive_group()
    budget.add_argument("--budget-mb", type=float, default=None,
                        help="fixed budget in MB of float32 parameters, the paper's unit (P = MB x 250,000); "
                             "the tables hold about 3x that in bytes (Adam state) plus 16 bytes a row")
    budget.add_argument("--memory-mb", type=float, default=None,
                        help="fixed budget in MB (10^6 bytes) of memory: everything the tables hold (weights, "
                             "Adam state, 16 bytes of metadata a row) stays within it")
    budget.add_argument("--mean-size", type=float, default=None,
                        help=f"budget as a mean width per row, P = c x (users + items) "
                             f"(default {DEFAULT_MEAN_SIZE:g} when no budget is given)")
    sizes = p.add_argument_group("policies")
    which = sizes.add_mutually_exclusive_group()
    which.add_argument("--policy", default=None, choices=sorted(POLICIES),
                       help="run this one policy (scall: the learned agent; the others are fixed rules, README)")
    which.add_argument("--compare", default=DEFAULT_COMPARE, metavar="POLICY,POLICY,...",
                       help="policies (names as --policy's) run one after the other on the same stream at the "
                            f"same budget, into one report (default: {DEFAULT_COMPARE})")
    sizes.add_argument("--d-max", type=int, default=DEFAULT_D_MAX, help="the widest row (every row of full)")
    sizes.add_argument("--d-min", type=int, default=1, help="the narrowest row a budgeted policy gives")
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
    train.add_argument("--model", default=defaults.model, choices=["lightgcn", "mf"],
                       help="the recommender trained with BPR on the tables: LightGCN or matrix factorisation")
    train.add_argument("--layers", type=int, default=defaults.layers, help="LightGCN propagation layers")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help="training pairs a batch")
    train.add_argument("--max-batches", type=int, default=defaults.max_batches, help="batches a segment, at most")
    train.add_argument("--eval-every", type=int, default=defaults.eval_every,
                       help="batches between validation checks (early stopping)")
    train.add_argument("--patience", type=int, default=defaults.patience,
                       help="validation checks without improvement before a segment's training stops")
    train.add_argument("--lr", type=float, default=defaults.lr, help="Adam's learning rate")
    train.add_argument("--eval-users", type=int, default=None,
                       help="evaluate a seeded sample of at most this many users per segment (huge streams)")
    train.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU (Triton kernels)")
    train.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    train.add_argument("--nproc", type=int, default=1,
                       help="processes (gloo) over which the tables are sharded; also set by torchrun")
    train.add_argument("--seed", type=int, default=0, help="seed of every random draw: a run is reproducible")

    run = p.add_argument_group("output")
    run.add_argument("--out", default="runs/stream", help="output folder")
    run.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bars on stderr (default: only when stderr is a terminal)")
    run.add_argument("--debug", action="store_true",
                     help="on an error, show the Python traceback (also PYSCALL_DEBUG=1)")
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
                         compare="scall", probe="warm", alpha_scale="log")}


def _preset_words(name: str) -> list:
    return [f"--{k.replace('_', '-')} {v}" for k, v in PRESETS[name].items()]


def parse_args(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "preset", None):
        parser._subparsers._group_actions[0].choices["stream"].set_defaults(**PRESETS[args.preset])
        args = parser.parse_args(argv)
    return args


def _data_format(args) -> str:
    """The format of --data: named, or detected from the path (the file must exist)."""
    if args.data == "online-retail" or args.data.startswith("synthetic:") or args.format == "synthetic":
        return args.format or args.data.split(":")[0]
    if not Path(args.data).is_file():
        raise UsageError(f"--data {args.data}: no such file (or one of the names 'online-retail', "
                         "'synthetic:N_USERS,N_ITEMS,N_INTERACTIONS')")
    if args.format is not None:
        return args.format
    try:
        return detect_format(args.data)
    except ValueError:
        raise UsageError(f"--data {args.data}: cannot tell the format from the name; give --format, one of "
                         f"{', '.join(FORMATS)}") from None


def _load_interactions(args):
    from .data.loaders import load, load_online_retail
    from .data.synthetic import synthetic_stream
    fmt = _data_format(args)
    given = [f"--{k.replace('_', '-')}" for k in CSV_OPTIONS if getattr(args, k) is not None]
    if fmt != "csv" and given:
        raise UsageError(f"{' '.join(given)}: for csv files only, and --data {args.data} is read as {fmt} "
                         "(--format csv reads it as csv)")
    if fmt == "online-retail":
        return load_online_retail(None if args.data == "online-retail" else args.data)
    if fmt == "synthetic":
        spec = args.data.split(":", 1)[-1]
        try:
            n_users, n_items, n_inter = (int(x) for x in spec.split(","))
        except ValueError:
            raise UsageError(f"--data synthetic:N_USERS,N_ITEMS,N_INTERACTIONS expected, got {args.data!r}") from None
        return synthetic_stream(n_users, n_items, n_inter, seed=args.seed)
    if fmt == "csv":
        missing = [f"--{k.replace('_', '-')}" for k in CSV_OPTIONS[:3] if getattr(args, k) is None]
        if missing:
            raise UsageError(f"--data {args.data} is read as csv: name its columns with {', '.join(missing)} "
                             f"(its first line: {_first_line(args.data)!r})")
        return load(args.data, format="csv", **{k: getattr(args, k) for k in CSV_OPTIONS})
    return load(args.data, format=fmt)


def _first_line(path) -> str:
    from .data.reading import open_text
    with open_text(Path(path)) as f:
        return f.readline().rstrip("\r\n")[:200]


def _agent_config(args) -> AgentConfig:
    try:
        low, high = (int(x) for x in args.search_steps.split(","))
    except ValueError:
        raise UsageError(f"--search-steps MIN,MAX expected, got {args.search_steps!r}") from None
    reward = args.reward or ("paper" if args.protocol == "paper" else "log-uniform")
    try:
        return AgentConfig(groups=args.state_groups, alpha_scale=args.alpha_scale, min_steps=low, max_steps=high,
                           probe_batches=args.probe_batches, probe=args.probe, reward=reward,
                           reward_scale=args.reward_scale, sac=SACConfig(updates_per_step=args.agent_updates))
    except ValueError as e:
        raise UsageError(f"SCALL agent: {e}") from None


def _policy(name: str, args, log):
    options = {"freq-rule": dict(beta=args.beta),
               "fixed-alpha": dict(alpha_user=args.alpha, alpha_item=args.alpha, user_share=args.user_share),
               "scall": dict(config=_agent_config(args), seed=args.seed, log=log)}
    return make_policy(name, **options.get(name, {}))


def _progress(args):
    """(tqdm, batch bar factory), or (None, None) without bars: by default bars only on a terminal, so that a
    redirected log gets no carriage-return updates."""
    show = sys.stderr.isatty() if args.progress is None else args.progress
    if not show:
        return None, None
    from tqdm.auto import tqdm
    return tqdm, (lambda total: tqdm(total=total, desc="batches", leave=False, unit="batch"))


def _policy_names(args) -> list:
    names = [args.policy] if args.policy else [n.strip() for n in args.compare.split(",") if n.strip()]
    for name in names:
        if name not in POLICIES:
            raise UsageError(f"--compare: unknown policy {name!r}; expected some of {', '.join(sorted(POLICIES))}")
    if not names or len(set(names)) < len(names):
        raise UsageError(f"--compare: policies named once each expected, got {args.compare!r}")
    return names


def _budget(args) -> Budget:
    if args.budget_mb is None and args.mean_size is None and args.memory_mb is None:
        args.mean_size = DEFAULT_MEAN_SIZE
    try:
        return Budget(megabytes=args.budget_mb, mean_size=args.mean_size, memory_mb=args.memory_mb)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _config(args) -> TrainConfig:
    try:
        return TrainConfig(model=args.model, d_max=args.d_max, d_min=args.d_min, layers=args.layers,
                           batch_size=args.batch_size, max_batches=args.max_batches, eval_every=args.eval_every,
                           patience=args.patience, lr=args.lr, eval_users=args.eval_users, device=args.device,
                           seed=args.seed)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _start(trainer, ckpt: Path, name: str, resume: bool, say) -> None:
    """Loads the policy's checkpoint under --resume and says what was resumed, or that nothing was; without
    --resume an old checkpoint is removed (the run starts over)."""
    if not resume:
        if ckpt.exists():
            ckpt.unlink()
        return
    state = checkpoint.load(ckpt)
    if state is None:
        say(f"--resume: no checkpoint for {name} at {ckpt}; {name} starts at segment 0")
        return
    trainer.load_state_dict(state)
    total = len(trainer.stream.segments)
    left = f"continuing at segment {trainer.next_segment}" if not trainer.done else "nothing left to run"
    say(f"--resume: {name} resumed from {ckpt}: segments 0-{trainer.next_segment - 1} of {total} done, {left}")
    for row in trainer.results:
        say(table_row(row) + "  (from checkpoint)")


def stream_command(args, trainer_cls=StreamTrainer) -> int:
    from .data.stream import prepare_stream
    if trainer_cls is StreamTrainer and (args.nproc != 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        from .sharded_stream import launch  # runs this command again on every rank, sharded
        return launch(args, stream_command)
    names = _policy_names(args)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    budget, config = _budget(args), _config(args)
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
        raise UsageError("the stream has no segments (a shorter --window, a lower --threshold or no --k-core)")

    rows, sizes, searches = [], {}, {}
    say(table_header())
    for name in names:
        torch.manual_seed(args.seed)  # every policy starts from the same global RNG state
        trainer = trainer_cls(stream, _policy(name, args, say), config, budget, batch_progress=batch_bar)
        ckpt = out / "checkpoints" / f"{name}.pt"
        _start(trainer, ckpt, name, args.resume, say)
        bar = tqdm(total=len(stream.segments), initial=trainer.next_segment, desc=name, unit="segment") \
            if tqdm else None
        while not trainer.done:
            row = trainer.run_segment()
            checkpoint.save(trainer.state_dict(), ckpt)
            say(table_row(row))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        rows.extend(trainer.results)
        if name == "scall":
            searches[name] = trainer.policy.history
        last = stream.segments[-1]
        user_w, item_w = trainer.widths()
        sizes[name] = (user_w.numpy(), last.user_frequency(), item_w.numpy(), last.item_frequency())

    payload = {"source": stream.source, "n_users": stream.n_users, "n_items": stream.n_items,
               "stream_config": stream.config, "budget": budget.describe(), "model": args.model,
               "d_max": args.d_max, "options": dict(vars(args)), "searches": searches,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "wall_s": time.perf_counter() - started}
    paths = write_all(out, rows, payload, sizes)
    say("\n" + "\n".join(summary_lines(rows, budget.describe())))
    say(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - started:.1f} s; "
        f"peak RSS {payload['peak_rss_mb']:.0f} MB")
    return 0


# Errors a user can act on: their message is the whole story (file and line, budget and what was asked).
_USER_ERRORS = (UsageError, DataFormatError, BudgetError, BudgetExceededError, CheckpointError, OSError,
                MemoryError)


def main(argv=None) -> int:
    """The `pyscall` command. An error prints one line to stderr and returns non-zero: 2 for options that
    cannot run, 1 when the run fails, 130 on Ctrl-C; --debug or PYSCALL_DEBUG=1 raises it instead."""
    args = parse_args(argv)
    debug = args.debug or os.environ.get("PYSCALL_DEBUG", "") not in ("", "0")
    try:
        return stream_command(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("pyscall stream: interrupted (--resume continues from the last finished segment)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001: every error becomes one line unless --debug
        if debug:
            raise
        if isinstance(e, _USER_ERRORS):
            message = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
        else:
            message = f"{type(e).__name__}: {e} (an internal error: --debug shows where)"
        print(f"pyscall stream: error: {message}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
