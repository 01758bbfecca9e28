"""Size policies: budget-exact, inside [d_min, d_max], frequency order, determinism."""
import numpy as np
import pytest
import torch

from pyscall.app.scall.policies import (POLICIES, FixedAlphaPolicy, FrequencyRulePolicy, SizeContext, feasible_total,
                                    fit_to_budget, make_policy, rank_assign)


def _ctx(n_users=300, n_items=200, budget=4000, d_min=1, d_max=32, seed=0):
    rng = np.random.default_rng(seed)
    # power-law-ish frequencies with many ties and zeros (inactive entities)
    user_freq = np.floor(rng.pareto(1.2, n_users) * 3).astype(np.int64)
    item_freq = np.floor(rng.pareto(1.0, n_items) * 5).astype(np.int64)
    return SizeContext(3, user_freq, item_freq, budget, d_min, d_max, np.random.default_rng(seed + 1))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("d_min,d_max", [(0, 8), (1, 64), (3, 5)])
def test_fit_to_budget_is_exact_and_bounded(seed, d_min, d_max):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    weights = rng.pareto(1.5, n) * rng.integers(0, 2, n)  # zeros included
    for total in (0, n * d_min - 1, int(rng.integers(n * d_min, n * d_max + 1)), n * d_max, n * d_max + 50):
        sizes = fit_to_budget(weights, total, d_min, d_max)
        assert sizes.dtype == np.int64 and sizes.shape == (n,)
        assert sizes.sum() == feasible_total(total, n, d_min, d_max)
        assert sizes.min() >= d_min and sizes.max() <= d_max


def test_fit_to_budget_is_proportional_where_unclipped():
    sizes = fit_to_budget(np.array([1.0, 2.0, 4.0, 1000.0]), 60, 1, 40)
    # 1000 is clipped to 40, the remaining 20 is shared 1:2:4
    assert sizes.tolist() == [3, 6, 11, 40] or sizes.tolist() == [3, 5, 12, 40]
    assert sizes.sum() == 60


def test_fit_to_budget_rejects_bad_weights():
    with pytest.raises(ValueError, match="weights"):
        fit_to_budget(np.array([1.0, -1.0]), 4, 1, 4)
    with pytest.raises(ValueError, match="weights"):
        fit_to_budget(np.array([1.0, np.nan]), 4, 1, 4)


@pytest.mark.parametrize("name", sorted(set(POLICIES) - {"full"}))
@pytest.mark.parametrize("budget", [500, 4000, 9999])
def test_budgeted_policies_are_exact(name, budget):
    ctx = _ctx(budget=budget)
    users, items = make_policy(name).sizes(ctx)
    assert users.dtype == torch.int32 and items.dtype == torch.int32
    assert users.shape == (ctx.n_users,) and items.shape == (ctx.n_items,)
    assert int(users.sum()) + int(items.sum()) == budget
    for w in (users, items):
        assert int(w.min()) >= ctx.d_min and int(w.max()) <= ctx.d_max


@pytest.mark.parametrize("name", sorted(set(POLICIES) - {"full"}))
def test_budgeted_policies_never_exceed_an_infeasibly_large_budget(name):
    ctx = _ctx(budget=10**7)  # more than every row at d_max
    users, items = make_policy(name).sizes(ctx)
    assert int(users.sum()) + int(items.sum()) <= ctx.budget
    assert int(users.max()) <= ctx.d_max and int(items.max()) <= ctx.d_max


def test_full_is_d_max_everywhere():
    ctx = _ctx()
    users, items = make_policy("full").sizes(ctx)
    assert (users == ctx.d_max).all() and (items == ctx.d_max).all()


def test_uniform_widths_differ_by_at_most_one_and_extra_goes_to_frequent_rows():
    ctx = _ctx(budget=4321)
    users, items = make_policy("uniform").sizes(ctx)
    both = torch.cat([users, items])
    assert int(both.max()) - int(both.min()) == 1
    for widths, freq in ((users, ctx.user_freq), (items, ctx.item_freq)):
        wide = (widths == both.max()).numpy()
        if wide.any() and not wide.all():
            assert freq[wide].min() >= freq[~wide].max()


@pytest.mark.parametrize("name", ["freq-rule", "fixed-alpha"])
def test_more_frequent_rows_are_never_narrower(name):
    ctx = _ctx()
    for widths, freq in zip(make_policy(name).sizes(ctx), (ctx.user_freq, ctx.item_freq)):
        order = np.lexsort((-np.arange(len(freq)), -freq))
        assert (np.diff(widths.numpy()[order]) <= 0).all()
        assert widths.max() > widths.min()  # not uniform


def test_freq_rule_beta_controls_the_spread():
    ctx = _ctx()
    low = torch.cat(FrequencyRulePolicy(beta=0.2).sizes(ctx)).float().std()
    high = torch.cat(FrequencyRulePolicy(beta=1.0).sizes(ctx)).float().std()
    assert high > low


def test_fixed_alpha_gives_users_their_share():
    ctx = _ctx(budget=3000)
    users, items = FixedAlphaPolicy(alpha_user=0.3, alpha_item=2.0, user_share=0.7).sizes(ctx)
    assert int(users.sum()) == 2100 and int(items.sum()) == 900


def test_fixed_alpha_moves_an_infeasible_share_to_the_other_side():
    ctx = _ctx(budget=600)  # 300 users, 200 items, d_min 1: a 0.2 share (120) is below 300 x d_min
    users, items = FixedAlphaPolicy(user_share=0.2).sizes(ctx)
    assert int(users.sum()) == 300 and int(items.sum()) == 300


def test_random_policy_follows_the_context_rng():
    a = make_policy("random").sizes(_ctx(seed=4))
    b = make_policy("random").sizes(_ctx(seed=4))
    c = make_policy("random").sizes(_ctx(seed=5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_rank_assign_puts_newest_first_on_ties():
    out = rank_assign(np.array([1, 2, 3, 4]), np.array([0, 5, 0, 0]))
    # id 1 is the most frequent; among the frequency-0 ids the newest (3) comes first
    assert out.tolist() == [1, 4, 2, 3]


def test_bad_policy_options_raise():
    with pytest.raises(ValueError, match="unknown size policy"):
        make_policy("nope")
    with pytest.raises(ValueError, match="beta"):
        FrequencyRulePolicy(beta=0)
    with pytest.raises(ValueError, match="user_share"):
        FixedAlphaPolicy(user_share=1.0)
