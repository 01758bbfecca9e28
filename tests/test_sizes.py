"""power_law_sizes: hand-computed cases, and properties over n, total, alpha, d_min, d_max and ties."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyscall.app.scall import power_law_sizes


def test_hand_computed_unclipped():
    # shares (1 - k/4)^1 = 1, .75, .5, .25 -> sizes 4, 3, 2, 1 by rank; ranks: id1 (9), id0 (5), id3, id2
    sizes = power_law_sizes(np.array([5, 9, 0, 0]), 10, 1.0, d_min=0, d_max=256)
    assert sizes.dtype == torch.int32 and sizes.tolist() == [3, 4, 1, 2]


def test_hand_computed_water_filling():
    # d_max=3 clips ranks 0 and 1; the other 4 units go 2:1 to ranks 2, 3 -> 2.67, 1.33 -> 3, 1
    assert power_law_sizes([5, 9, 0, 0], 10, 1.0, d_min=0, d_max=3).tolist() == [3, 3, 1, 3]
    # alpha = 0.5: shares 1, .5625, .25, .0625 (sum 1.875), total 15 -> 8, 4.5, 2, 0.5 -> d_min=1 lifts
    # rank 3: 1 + lam * 1.8125 = 15 -> 7.72, 4.34, 1.93, 1 -> floors 7, 4, 1, 1 (13), +1 to .93 and .72
    assert power_law_sizes([3, 2, 1, 0], 15, 0.5, d_min=1, d_max=256).tolist() == [8, 4, 2, 1]


def test_budget_outside_the_feasible_range():
    assert power_law_sizes([1, 2, 3], 2, 1.0, d_min=2, d_max=8).tolist() == [2, 2, 2]  # n * d_min
    assert power_law_sizes([1, 2, 3], 100, 1.0, d_min=2, d_max=8).tolist() == [8, 8, 8]  # n * d_max
    assert power_law_sizes([], 100, 1.0).shape == (0,)
    assert power_law_sizes(torch.tensor([4, 4]), 7, 3.0, d_min=0, d_max=5).tolist() == [3, 4]  # newest first


@pytest.mark.parametrize("args, error", [
    (([1, 2], 10, 0.0), ValueError), (([1, 2], 10, float("nan")), ValueError),
    (([1, 2], 10.5, 1.0), TypeError), (([1, 2], -1, 1.0), ValueError),
    (([1, -2], 10, 1.0), ValueError), (([[1, 2]], 10, 1.0), ValueError),
])
def test_bad_input(args, error):
    with pytest.raises(error):
        power_law_sizes(*args)
    with pytest.raises(ValueError, match="d_min must be <= d_max"):
        power_law_sizes([1, 2], 10, 1.0, d_min=5, d_max=4)


def reference_by_rank(n, target, alpha, d_min, d_max):
    """Water-filled real sizes by bisection on the level (float64, many iterations)."""
    share = (1.0 - np.arange(n) / n) ** (1.0 / alpha)
    lo, hi = 0.0, d_max / share.min() + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if np.clip(mid * share, d_min, d_max).sum() < target:
            lo = mid
        else:
            hi = mid
    return np.clip(hi * share, d_min, d_max)


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 200),
    n_distinct=st.integers(1, 6),  # few distinct frequencies -> many ties
    alpha=st.floats(0.1, 30.0),
    d_min=st.integers(0, 6),
    extra=st.integers(0, 300),
    budget=st.floats(0.0, 1.2),
    seed=st.integers(0, 2**31 - 1),
)
def test_properties(n, n_distinct, alpha, d_min, extra, budget, seed):
    d_max = d_min + extra
    rng = np.random.default_rng(seed)
    freq = rng.integers(0, n_distinct, n)
    total = int(budget * n * d_max)
    sizes = power_law_sizes(freq, total, alpha, d_min, d_max)
    assert sizes.dtype == torch.int32 and sizes.shape == (n,)
    s = sizes.numpy().astype(np.int64)
    target = min(max(total, n * d_min), n * d_max)
    assert s.sum() == target  # exact, so never over budget when the budget is feasible
    if n:
        assert s.min() >= d_min and s.max() <= d_max
    rank = np.lexsort((-np.arange(n), -freq))  # (frequency, id) descending: newest id first on ties
    by_rank = s[rank]
    assert np.all(np.diff(by_rank) <= 0)  # monotone in rank, incl. newest-first on frequency ties
    assert torch.equal(sizes, power_law_sizes(freq.copy(), total, alpha, d_min, d_max))  # deterministic
    if n and n * d_min < target < n * d_max:
        real = reference_by_rank(n, target, alpha, d_min, d_max)
        assert np.all(np.abs(by_rank - real) < 1 + 1e-6)  # rounding moves each size by less than one


def test_large_alpha_range_is_finite():
    freq = np.arange(100_000)[::-1]
    for alpha in (1e-3, 0.1, 1.0, 30.0, 1e3):
        s = power_law_sizes(freq, 16 * 100_000, alpha, 1, 256).numpy()
        assert s.sum() == 1_600_000 and s.min() >= 1 and s.max() <= 256
        assert np.all(np.diff(s) <= 0)  # id 0 is the most frequent
