"""The SCALL agent (SCALL.md section 3): a Soft Actor-Critic that picks, per segment, the user share of the
budget and the power-law shapes of the user and item sizes.

At segment t >= 1 the agent first learns on D_{t-1}: it samples an action, sizes the tables with it, runs a
short probe training, and is rewarded by the probe's fitness against a uniform-size probe at the same budget;
it stops once its deterministic action has settled. Then it looks at D_t and deploys its mean action.
Segment 0 has no model to search from and gets uniform sizes, as in the paper code.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from .policies import PROBE_STARTS, FixedAlphaPolicy, SizeContext, SizePolicy, UniformPolicy
from .sac import SAC, SACConfig

ALPHA_SCALES = ("prior", "log", "linear")
PROBES = PROBE_STARTS
REWARDS = ("log-uniform", "paper")


@dataclass
class AgentConfig:
    groups: int = 256                 # rank groups of each frequency profile (paper code: 256)
    embeddings: bool = True           # mean user and item embeddings in the state (paper code: yes)
    spreads: bool = True              # (max - min) / (d_max - d_min) of the current sizes
    alpha_scale: str = "prior"        # action 0.5 is the prior (see action_to_shape); "log": log-uniform over
                                      # [alpha_min, alpha_max]; "linear": the paper's alpha = 0.1 + a * 29.9
    alpha_min: float = 0.1
    alpha_max: float = 30.0
    min_steps: int = 11               # probes per segment, at least
    max_steps: int = 15               # and at most
    settle_steps: int = 5             # settled: the deterministic action after each of the last `settle_steps`
                                      # rounds of probes moved < settle_tol
    settle_tol: float = 0.01
    probe_batches: int = 10           # batches of one probe (the paper code's fresh probe: 200, cut to 20 by
                                      # its authors; bench/bench_probes.py compares them)
    probe: str = "replay"             # where a probe starts (`train.Prober`): "replay" re-runs the previous
                                      # segment's deployment at the sampled sizes; "warm" cuts the current model;
                                      # "fresh" is the paper code's new model
    probes_per_step: int = 1          # actions sampled and probed side by side in one pass (`fitness_many`)
    chain: bool = False               # True: the paper code's chained transitions (gamma bootstraps the next
                                      # probe); False: each probe is its own episode, as a probe's sizes do
                                      # not change the next probe's outcome
    reward: str = "log-uniform"       # "paper": fitness over the deployed model's, rescaled by paper_scale
    reward_scale: float = 5.0         # log-uniform rewards times this: the paper code's rescaling slope
                                      # (1 / (1.1 - 0.9)), so rewards sit on the scale its entropy weight was set for
    paper_scale: tuple = (0.9, 1.1)   # the paper code's Amazon-Book constants
    prior: Optional[tuple] = (0.5, 0.5, 0.5)  # the actor's first action as (user share, alpha_user, alpha_item):
                                      # fixed-alpha's default; None: wherever the random init puts it
    # the paper code's SAC, with 10 updates after each probe instead of 3: the actor then moves within the
    # 11-15 probes of a segment
    sac: SACConfig = field(default_factory=lambda: SACConfig(updates_per_step=10))

    def __post_init__(self):
        if isinstance(self.sac, dict):
            self.sac = SACConfig(**self.sac)
        for name, allowed in (("alpha_scale", ALPHA_SCALES), ("probe", PROBES), ("reward", REWARDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0 < self.alpha_min < self.alpha_max:
            raise ValueError(f"need 0 < alpha_min < alpha_max, got {self.alpha_min}, {self.alpha_max}")
        for name in ("groups", "min_steps", "settle_steps", "probe_batches", "probes_per_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps < self.min_steps:
            raise ValueError(f"max_steps ({self.max_steps}) must be >= min_steps ({self.min_steps})")
        if self.alpha_scale == "prior" and self.prior is None:
            raise ValueError('alpha_scale "prior" needs a prior (user share, alpha_user, alpha_item)')
        if self.prior is not None:
            share, alpha_user, alpha_item = self.prior
            if not (0 < share < 1 and self.alpha_min <= alpha_user <= self.alpha_max
                    and self.alpha_min <= alpha_item <= self.alpha_max):
                raise ValueError(f"prior must be (user share in (0, 1), two alphas in [{self.alpha_min}, "
                                 f"{self.alpha_max}]), got {self.prior}")
        if not self.reward_scale > 0:
            raise ValueError(f"reward_scale must be > 0, got {self.reward_scale}")
        lo, hi = self.paper_scale
        if not lo < hi:
            raise ValueError(f"paper_scale must be (low, high) with low < high, got {self.paper_scale}")


# -- the state ------------------------------------------------------------------------------------
def pooled_profile(frequencies, groups: int) -> np.ndarray:
    """Frequencies sorted descending, min-max scaled to [0, 1], averaged over `groups` equal rank groups.

    The sorted profile is read as a step function on [0, 1] (rank k covers [k/n, (k+1)/n)) and each group
    is its mean over [g/G, (g+1)/G], so the length is `groups` for any n >= 1, and n a multiple of G gives
    the plain group means.
    """
    f = np.sort(np.asarray(frequencies, dtype=np.float64))[::-1]
    if f.size == 0:
        return np.zeros(groups)
    span = f[0] - f[-1]
    f = (f - f[-1]) / span if span > 0 else np.zeros_like(f)
    n = f.size
    integral = np.concatenate([[0.0], np.cumsum(f)])  # integral[k] = n * area of the first k ranks

    def area(x):  # n * integral of the step function over [0, x], x in [0, 1]
        k = np.minimum(np.floor(x * n).astype(np.int64), n - 1)
        return integral[k] + (x * n - k) * f[k]

    edges = np.arange(groups + 1) / groups
    return np.diff(area(edges)) * groups / n


def state_dim(d_max: int, config: AgentConfig) -> int:
    return 2 * config.groups + 2 + (2 * d_max if config.embeddings else 0) + (2 if config.spreads else 0)


def agent_state(user_freq, item_freq, last_reward: float, tables, d_min: int, d_max: int,
                config: AgentConfig) -> np.ndarray:
    """The fixed-length state: pooled user and item frequency profiles, the last reward, the user share of
    the vocabulary, the mean user and item embeddings (padded to d_max), the spreads of the current sizes."""
    n_u, n_i = len(user_freq), len(item_freq)
    parts = [pooled_profile(user_freq, config.groups), pooled_profile(item_freq, config.groups),
             [last_reward, n_u / max(1, n_u + n_i)]]
    users, items = tables
    if config.embeddings:
        parts += [_mean_row(users), _mean_row(items)]
    if config.spreads:
        span = max(1, d_max - d_min)
        parts += [[_spread(users.widths) / span, _spread(items.widths) / span]]
    return np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])


def _mean_row(table) -> np.ndarray:
    with torch.no_grad():
        dense = table.to_dense()
    return dense.mean(0).double().cpu().numpy() if len(dense) else np.zeros(dense.shape[1])


def _spread(widths: torch.Tensor) -> float:
    return float(widths.max() - widths.min()) if len(widths) else 0.0


# -- the action -----------------------------------------------------------------------------------
def _ends(config: AgentConfig) -> np.ndarray:
    """Rows (low, centre, high) of each action coordinate's range: the user share linear, the alphas as logs."""
    log_lo, log_hi = math.log(config.alpha_min), math.log(config.alpha_max)
    if config.alpha_scale == "prior":
        share, alpha_user, alpha_item = config.prior
        centre = [share, math.log(alpha_user), math.log(alpha_item)]
    else:
        centre = [0.5, (log_lo + log_hi) / 2, (log_lo + log_hi) / 2]
    return np.array([[0.0, centre[0], 1.0], [log_lo, centre[1], log_hi], [log_lo, centre[2], log_hi]])


def action_to_shape(action, config: AgentConfig) -> tuple[float, float, float]:
    """(user share w, alpha_user, alpha_item) for an actor output in (0, 1)^3.

    "prior" (default): each coordinate is piecewise linear with 0.5 at the prior, so the box centre, where
    SAC's entropy term pulls a tanh-squashed mean, is the prior rather than an arbitrary shape; the alphas on
    a log scale. "log": log-linear over [alpha_min, alpha_max]. "linear": the paper's alpha_min + a * range.
    """
    a = np.clip(np.asarray(action, dtype=np.float64), 0.0, 1.0)
    if config.alpha_scale == "linear":
        lo, hi = config.alpha_min, config.alpha_max
        values = [a[0], *(lo + a[1:] * (hi - lo))]
    else:
        ends = _ends(config)
        values = [np.interp(x, [0.0, 0.5, 1.0], row) for x, row in zip(a, ends)]
        values[1:] = np.exp(values[1:])
    share = float(np.clip(values[0], 1e-3, 1 - 1e-3))
    return share, float(values[1]), float(values[2])


def shape_to_action(shape, config: AgentConfig) -> np.ndarray:
    """The inverse of `action_to_shape` (alphas clipped to [alpha_min, alpha_max])."""
    share, alpha_user, alpha_item = shape
    lo, hi = config.alpha_min, config.alpha_max
    alphas = np.clip(np.array([alpha_user, alpha_item], dtype=np.float64), lo, hi)
    if config.alpha_scale == "linear":
        return np.concatenate([[share], (alphas - lo) / (hi - lo)])
    values = [share, *np.log(alphas)]
    return np.array([np.interp(v, row, [0.0, 0.5, 1.0]) for v, row in zip(values, _ends(config))])


def shape_sizes(ctx: SizeContext, shape) -> tuple[torch.Tensor, torch.Tensor]:
    share, alpha_user, alpha_item = shape
    return FixedAlphaPolicy(alpha_user, alpha_item, share).sizes(ctx)


# -- the policy -----------------------------------------------------------------------------------
class ScallPolicy(SizePolicy):
    """SCALL's learned sizes. `log(line)` receives one line per search step (progress output)."""
    name = "scall"

    def __init__(self, config: Optional[AgentConfig] = None, seed: int = 0,
                 log: Optional[Callable[[str], object]] = None):
        self.config = config or AgentConfig()
        self.seed = seed
        self.log = log
        self.sac: Optional[SAC] = None      # built at the first search, when d_max is known
        self.last_reward = 0.0
        self.last_search: dict = {}         # scalars of the latest segment, merged into its result row
        self.history: list[dict] = []       # every segment's search trace (results.json)

    @property
    def replays(self) -> bool:
        return self.config.probe == "replay"

    def sizes(self, ctx: SizeContext):
        if ctx.previous is None or ctx.trainer is None:
            self.last_search = {}
            return UniformPolicy().sizes(ctx)
        trace = self._search(ctx)
        state = agent_state(ctx.user_freq, ctx.item_freq, self.last_reward, ctx.trainer.tables(), ctx.d_min,
                            ctx.d_max, self.config)
        action = self.sac.act(state, deterministic=True)
        shape = action_to_shape(action, self.config)
        self.last_search = {"user_share": shape[0], "alpha_user": shape[1], "alpha_item": shape[2],
                            "search_steps": len(trace["steps"])}
        self.history.append({"segment": ctx.index, **trace, "deployed": list(shape)})
        return shape_sizes(ctx, shape)

    def _search(self, ctx: SizeContext) -> dict:
        cfg, trainer, prev = self.config, ctx.trainer, ctx.previous
        if self.sac is None:
            self.sac = SAC(state_dim(ctx.d_max, cfg), 3, cfg.sac, seed=self.seed)
            if cfg.prior is not None:
                self.sac.start_at(shape_to_action(cfg.prior, cfg))
        start = time.perf_counter()
        prober = trainer.prober(prev, cfg.probe_batches, start=cfg.probe)
        pctx = SizeContext(prev.index, prev.user_frequency(), prev.item_frequency(), prober.budget, ctx.d_min,
                           ctx.d_max, ctx.rng, segment=prev)
        if cfg.reward == "paper":
            reference = prober.current_fitness()
        else:
            reference = prober.fitness(*UniformPolicy().sizes(pctx))
        tables = trainer.tables()
        state = agent_state(pctx.user_freq, pctx.item_freq, self.last_reward, tables, ctx.d_min, ctx.d_max, cfg)
        steps, settled = [], []
        while len(steps) < cfg.max_steps:
            k = min(cfg.probes_per_step, cfg.max_steps - len(steps))
            actions = [self.sac.act(state) for _ in range(k)]
            shapes = [action_to_shape(a, cfg) for a in actions]
            sizes = [shape_sizes(pctx, shape) for shape in shapes]
            fits = prober.fitness_many(sizes)
            for action, shape, (user_w, item_w), fit in zip(actions, shapes, sizes, fits):
                reward = self._reward(fit, reference)
                next_state = state.copy()
                next_state[2 * cfg.groups] = reward
                if cfg.spreads:
                    span = max(1, ctx.d_max - ctx.d_min)
                    next_state[-2:] = [_spread(user_w) / span, _spread(item_w) / span]
                self.sac.store(state, action, reward, next_state, done=not cfg.chain)
                with _one_thread():
                    self.sac.train_step()
                steps.append({"action": [float(x) for x in action], "shape": list(shape), "fitness": fit,
                              "reward": reward})
                if self.log is not None:
                    self.log(f"  search t={prev.index} step {len(steps):>2}: w={shape[0]:.3f} "
                             f"alpha_u={shape[1]:7.3f} alpha_i={shape[2]:7.3f} fitness={fit:.4f} "
                             f"reward={reward:+.4f}")
                state, self.last_reward = next_state, reward
            settled.append(self.sac.act(state, deterministic=True))
            if len(steps) >= cfg.min_steps and _settled(settled, cfg.settle_steps, cfg.settle_tol):
                break
        return {"steps": steps, "reference_fitness": reference, "search_seconds": time.perf_counter() - start}

    def _reward(self, fit: float, reference: float) -> float:
        if self.config.reward == "paper":
            lo, hi = self.config.paper_scale
            return (fit / max(reference, 1e-12) - lo) / (hi - lo)
        eps = 1e-4  # a probe that ranks nothing right still gets a finite (very bad) reward
        return self.config.reward_scale * math.log((fit + eps) / (reference + eps))

    def state_dict(self) -> dict:
        return {"config": _plain(asdict(self.config)), "seed": self.seed, "last_reward": self.last_reward,
                "last_search": dict(self.last_search), "history": self.history,
                "sac": None if self.sac is None else self.sac.state_dict(),
                "state_dim": None if self.sac is None else self.sac.state_dim}

    def load_state_dict(self, state: dict) -> None:
        if state["config"] != _plain(asdict(self.config)) or state["seed"] != self.seed:
            raise ValueError("the checkpoint's agent was built with other settings; resume with the same options")
        self.last_reward = state["last_reward"]
        self.last_search = dict(state["last_search"])
        self.history = list(state["history"])
        self.sac = None
        if state["sac"] is not None:
            self.sac = SAC(state["state_dim"], 3, self.config.sac, seed=self.seed)
            self.sac.load_state_dict(state["sac"])


@contextlib.contextmanager
def _one_thread():
    """The networks are tiny: a second thread only adds synchronisation (an update took 100-200 ms with two
    threads on a busy 2-core machine, 3 ms with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _settled(actions: list, window: int, tol: float) -> bool:
    if len(actions) < window:
        return False
    last = np.stack(actions[-window:])
    return bool(np.abs(np.diff(last, axis=0)).max(initial=0.0) < tol)


def _plain(value):
    """Tuples as lists, so a config compares equal to its checkpointed copy."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
