"""Embedding sizes from a power law, exactly inside a parameter budget (SCALL.md section 2)."""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

_LOG_FLOOR = -700.0  # exp(-700) ~ 1e-304: keeps every rank share a normal float64 for any alpha > 0


def power_law_sizes(frequencies, total, alpha, d_min=1, d_max=256) -> torch.Tensor:
    """Integer sizes for ``n = len(frequencies)`` entities that sum to exactly
    ``min(max(total, n * d_min), n * d_max)`` (so never more than ``total`` unless even all-``d_min``
    exceeds it).

    1. Shape: the entity of rank ``k`` (0 = most frequent) gets a share proportional to the expected
       order statistic of a power law with density ``alpha * x**(alpha - 1)`` on [0, 1], in the
       closed form ``(1 - k / n) ** (1 / alpha)``.
    2. Water-filling: real sizes ``clip(lam * share, d_min, d_max)`` with the one level ``lam`` at
       which they sum to the target; ``lam`` is found in closed form on the piecewise-linear sum.
    3. Largest remainders: floors, then +1 for the largest fractional parts (rank order on ties),
       so sizes stay non-increasing in rank and the sum is exact.
    4. Assignment: entities ranked by (frequency, id) descending, i.e. the newest id first among
       equal frequencies; users and items are ranked separately by calling this once per side.

    ``frequencies``: 1-D numpy array, torch tensor or sequence of non-negative numbers.
    Returns an int32 CPU tensor ``[n]``. Deterministic: no randomness at all.
    """
    freq = _frequencies(frequencies)
    total, d_min, d_max = _count("total", total), _count("d_min", d_min), _count("d_max", d_max)
    if d_min > d_max:
        raise ValueError(f"d_min must be <= d_max, got d_min={d_min}, d_max={d_max}")
    if not (isinstance(alpha, numbers.Real) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    n = freq.size
    target = min(max(total, n * d_min), n * d_max)
    by_rank = _sizes_by_rank(n, target, float(alpha), d_min, d_max)
    order = np.lexsort((np.arange(n), freq))[::-1]  # frequency descending, then id descending
    sizes = np.empty(n, dtype=np.int32)
    sizes[order] = by_rank
    return torch.from_numpy(sizes)


def _frequencies(frequencies) -> np.ndarray:
    if isinstance(frequencies, torch.Tensor):
        frequencies = frequencies.detach().cpu().numpy()
    freq = np.asarray(frequencies)
    if freq.ndim != 1 or not (freq.dtype.kind in "iuf" or freq.size == 0):
        raise ValueError(f"frequencies must be a 1-D array of numbers, got shape {freq.shape} dtype {freq.dtype}")
    if freq.size and not (np.all(np.isfinite(freq)) and freq.min() >= 0):
        raise ValueError("frequencies must be finite and >= 0")
    return freq


def _count(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _sizes_by_rank(n: int, target: int, alpha: float, d_min: int, d_max: int) -> np.ndarray:
    """int64 [n], non-increasing, in [d_min, d_max], summing to ``target`` (which must be feasible)."""
    if target <= n * d_min or d_min == d_max:
        return np.full(n, d_min, dtype=np.int64)
    if target >= n * d_max:
        return np.full(n, d_max, dtype=np.int64)
    # log shares, non-increasing in rank; log1p keeps them exactly monotone
    logs = np.maximum(np.log1p(-np.arange(n) / n) / alpha, _LOG_FLOOR)
    neg = -logs  # ascending
    share = np.exp(logs)
    tail = np.concatenate([np.cumsum(share[::-1])[::-1], [0.0]])  # tail[k] = sum of share[k:]
    log_lo = math.log(d_min) if d_min > 0 else -math.inf
    log_hi = math.log(d_max)

    def split(level):
        """For log-levels: how many ranks sit at d_max (a prefix) and at d_min (a suffix)."""
        at_max = np.searchsorted(neg, level - log_hi, side="right")
        at_min = n - np.searchsorted(neg, level - log_lo, side="left") if d_min > 0 else np.zeros_like(at_max)
        return at_max, np.minimum(at_min, n - at_max)

    def total_at(level):
        at_max, at_min = split(level)
        middle = tail[at_max] - tail[n - at_min]
        return at_max * d_max + at_min * d_min + np.exp(level) * middle

    # The sum is continuous and non-decreasing in the level, linear in exp(level) between breakpoints,
    # where one rank leaves d_min or reaches d_max.
    # Both lists are ascending, so the stable sort (timsort) is a linear merge.
    breaks = np.sort(np.concatenate([log_hi - logs, log_lo - logs if d_min > 0 else []]), kind="stable")
    j, above = -1, breaks.size  # bisect for the last breakpoint whose total is <= target
    while above - j > 1:
        mid = (j + above) // 2
        if total_at(breaks[mid:mid + 1])[0] <= target:
            j = mid
        else:
            above = mid
    lo = breaks[j] if j >= 0 else breaks[0] - 1.0
    hi = breaks[j + 1] if j + 1 < breaks.size else breaks[-1] + 1.0
    at_max, at_min = (int(c[0]) for c in split(np.array([(lo + hi) / 2])))
    middle = tail[at_max] - tail[n - at_min]
    rest = target - at_max * d_max - at_min * d_min
    level = math.log(rest / middle) if middle > 0 and rest > 0 else lo
    real = np.clip(np.exp(level + logs), d_min, d_max)
    return _round_to_total(real, target, d_min, d_max)


def _round_to_total(real: np.ndarray, target: int, d_min: int, d_max: int) -> np.ndarray:
    """Largest-remainder rounding of non-increasing ``real`` to integers summing to ``target``."""
    sizes = np.floor(real).astype(np.int64)
    frac = real - sizes
    rank = np.arange(real.size)
    short = target - int(sizes.sum())  # >= 0 up to float error, < n
    if short > 0:  # +1 to the largest fractions; equal fractions: best rank first (keeps monotone)
        order = np.lexsort((rank, -frac))
        order = order[sizes[order] < d_max][:short]
        sizes[order] += 1
    elif short < 0:  # float error pushed the floors over: -1 from the smallest fractions, worst rank first
        order = np.lexsort((-rank, frac))
        order = order[sizes[order] > d_min][:-short]
        sizes[order] -= 1
    if int(sizes.sum()) != target:  # cannot happen unless the level search is broken; never over-spend
        raise RuntimeError(f"power_law_sizes: rounding reached {int(sizes.sum())} instead of {target}")
    return sizes
