"""Size policies: how many embedding dimensions each user and item row gets at a segment.

Every policy answers `policy.sizes(ctx) -> (user_widths, item_widths)` (int32 tensors) for a `SizeContext`.
Budgeted policies are budget-exact: the widths sum to exactly `ctx.budget` parameters, or to the nearest
feasible total when the budget is below `n * d_min` or above `n * d_max` (see `feasible_total`).
The learned SCALL agent (`agent.ScallPolicy`) is one more class with the same `sizes` method; the package
registers it in `POLICIES` (it builds on the classes here, so it cannot be imported from this module).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .sizes import power_law_sizes


# Where a reward probe starts (`train.Prober`): the previous deployment replayed, the current tables, or new ones.
PROBE_STARTS = ("replay", "warm", "fresh")


@dataclass
class SizeContext:
    index: int                    # segment index t
    user_freq: np.ndarray         # int64 [n_users]: interactions in the segment's training part
    item_freq: np.ndarray         # int64 [n_items]
    budget: Optional[int]         # parameters P for all user and item rows; None: no budget
    d_min: int
    d_max: int
    rng: np.random.Generator      # the only source of randomness a policy may use
    segment: Any = None           # the pyscall.app.data.Segment itself
    previous: Any = None          # segment t - 1 once a model has been trained on it, else None
    trainer: Any = None           # the StreamTrainer: its current tables, and probes (`trainer.prober`)

    @property
    def n_users(self) -> int:
        return len(self.user_freq)

    @property
    def n_items(self) -> int:
        return len(self.item_freq)


def feasible_total(total: int, n: int, d_min: int, d_max: int) -> int:
    """The parameter count a side of n rows actually gets: `total` clipped to [n*d_min, n*d_max]."""
    return int(min(max(total, n * d_min), n * d_max))


def fit_to_budget(weights: np.ndarray, total: int, d_min: int, d_max: int) -> np.ndarray:
    """Integer sizes proportional to `weights` (>= 0), each in [d_min, d_max], summing to feasible_total.

    Water-filling: sizes = clip(lam * weights, d_min, d_max) with lam found by bisection so that they sum
    to the budget (the excess of clipped entries goes to the others in proportion to their weights); then
    largest-remainder rounding makes the integer sum exact.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError("weights must be a 1-D array of finite values >= 0")
    n = len(weights)
    total = feasible_total(total, n, d_min, d_max)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not (weights > 0).any():
        weights = np.ones(n)
    # Zero weights become tiny: those rows stay at d_min until every other row is at d_max.
    weights = np.maximum(weights, weights.max() * 1e-12)
    lo, hi = 0.0, d_max / weights.min()   # at hi every row is clipped to d_max
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.clip(mid * weights, d_min, d_max).sum() <= total:
            lo = mid
        else:
            hi = mid
    sizes = np.clip(lo * weights, d_min, d_max)   # sums to <= total: rounding only ever adds
    floor = np.floor(sizes).astype(np.int64)
    short = total - int(floor.sum())
    order = np.argsort(-(sizes - floor), kind="stable")
    order = order[floor[order] < d_max][:short]
    floor[order] += 1
    return floor


def rank_assign(sizes: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """Give the k-th largest size to the k-th entity by (frequency, id) descending, newest id first on ties."""
    n = len(frequencies)
    order = np.lexsort((-np.arange(n), -np.asarray(frequencies)))
    out = np.empty(n, dtype=np.int64)
    out[order] = np.sort(sizes)[::-1]
    return out


def _pair(users: np.ndarray, items: np.ndarray):
    return torch.as_tensor(users, dtype=torch.int32), torch.as_tensor(items, dtype=torch.int32)


class SizePolicy:
    """Base class: a name (as on the command line) and `sizes(ctx)`."""
    name = ""
    budgeted = True
    replays = False  # True: the trainer keeps `start`, the tables before the latest resize (replay probes)

    def sizes(self, ctx: SizeContext):
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What a learning policy must carry across a checkpoint (nothing for the fixed ones)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"policy {self.name!r} keeps no state, got {sorted(state)}")

    def _joint(self, ctx: SizeContext, weights: np.ndarray):
        # One budget-exact allocation over users and items together, then split back and rank-assigned.
        sizes = fit_to_budget(weights, ctx.budget, ctx.d_min, ctx.d_max)
        return sizes[:ctx.n_users], sizes[ctx.n_users:]


class FullPolicy(SizePolicy):
    """Every row d_max wide, no budget: the upper reference."""
    name = "full"
    budgeted = False

    def sizes(self, ctx):
        return _pair(np.full(ctx.n_users, ctx.d_max), np.full(ctx.n_items, ctx.d_max))


class UniformPolicy(SizePolicy):
    """Every row the same width; the remainder of P goes one dimension each to the most frequent rows."""
    name = "uniform"

    def sizes(self, ctx):
        users, items = self._joint(ctx, np.ones(ctx.n_users + ctx.n_items))
        return _pair(rank_assign(users, ctx.user_freq), rank_assign(items, ctx.item_freq))


class RandomPolicy(SizePolicy):
    """Sizes proportional to uniform random weights, budget-exact, with no regard to frequency."""
    name = "random"

    def sizes(self, ctx):
        users, items = self._joint(ctx, ctx.rng.random(ctx.n_users + ctx.n_items))
        return _pair(users, items)


class FrequencyRulePolicy(SizePolicy):
    """Mixed-dimension rule (Ginart et al.): width proportional to (frequency + 1) ** beta over users and
    items together, so more frequent rows are wider; rank-assigned and budget-exact."""
    name = "freq-rule"

    def __init__(self, beta: float = 0.5):
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = beta

    def sizes(self, ctx):
        freq = np.concatenate([ctx.user_freq, ctx.item_freq]).astype(np.float64)
        users, items = self._joint(ctx, (freq + 1.0) ** self.beta)
        return _pair(rank_assign(users, ctx.user_freq), rank_assign(items, ctx.item_freq))


class FixedAlphaPolicy(SizePolicy):
    """SCALL's size distribution with a fixed action: user share w of P, power-law shapes alpha_u, alpha_i
    (`power_law_sizes`: rank fraction r gets a size proportional to (1 - r) ** (1 / alpha))."""
    name = "fixed-alpha"

    def __init__(self, alpha_user: float = 0.5, alpha_item: float = 0.5, user_share: float = 0.5):
        if not (alpha_user > 0 and alpha_item > 0):
            raise ValueError(f"alphas must be > 0, got {alpha_user}, {alpha_item}")
        if not 0.0 < user_share < 1.0:
            raise ValueError(f"user_share must be in (0, 1), got {user_share}")
        self.alpha_user, self.alpha_item, self.user_share = alpha_user, alpha_item, user_share

    def sizes(self, ctx):
        p_users = int(round(self.user_share * ctx.budget))
        # Where the fixed share leaves one side below n * d_min or above n * d_max, move the difference to
        # the other side (if the total allows), so the two sides together stay budget-exact.
        low = max(ctx.n_users * ctx.d_min, ctx.budget - ctx.n_items * ctx.d_max)
        high = min(ctx.n_users * ctx.d_max, ctx.budget - ctx.n_items * ctx.d_min)
        if low <= high:
            p_users = min(max(p_users, low), high)
        users = power_law_sizes(ctx.user_freq, p_users, self.alpha_user, ctx.d_min, ctx.d_max)
        items = power_law_sizes(ctx.item_freq, ctx.budget - p_users, self.alpha_item, ctx.d_min, ctx.d_max)
        return users.to(torch.int32), items.to(torch.int32)


POLICIES = {cls.name: cls for cls in (FullPolicy, UniformPolicy, RandomPolicy, FrequencyRulePolicy,
                                      FixedAlphaPolicy)}


def make_policy(name: str, **options) -> SizePolicy:
    """A policy by its command-line name; `options` go to its constructor."""
    if name not in POLICIES:
        raise ValueError(f"unknown size policy {name!r}; expected one of {sorted(POLICIES)}")
    return POLICIES[name](**options)
