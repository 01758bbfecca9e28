"""synthetic_stream: shape, determinism, arrivals and the popularity law, on small sizes.

Timing at full scale is a manual measurement (see bench/bench_synthetic.py), not part of this run.
"""
import numpy as np
import pytest

from pyscall.app.data import load, prepare_stream, synthetic_stream
from pyscall.app.data.synthetic import SPAN, START


@pytest.fixture(scope="module")
def stream():
    return synthetic_stream(300, 200, 20_000, seed=3)


def test_shape_and_order(stream):
    assert len(stream) == 20_000 and (stream.n_users, stream.n_items) == (300, 200)
    for a in (stream.user, stream.item, stream.time):
        assert a.dtype == np.int64 and a.shape == (20_000,)
    assert np.all(np.diff(stream.time) >= 0)
    assert stream.time[0] == START and stream.time[-1] < START + SPAN
    for ids, n in ((stream.user, 300), (stream.item, 200)):
        assert ids[0] == 0 and np.all(np.diff(np.maximum.accumulate(ids)) <= 1) and ids.max() == n - 1
    assert stream.user_keys.dtype.kind == "U" and sorted(stream.user_keys.astype(int)) == list(range(300))
    assert stream.source.startswith("synthetic(n_users=300")


def test_deterministic_in_seed(stream):
    again = synthetic_stream(300, 200, 20_000, seed=3)
    for name in ("user", "item", "time", "user_keys", "item_keys"):
        assert np.array_equal(getattr(stream, name), getattr(again, name))
    other = synthetic_stream(300, 200, 20_000, seed=4)
    assert not np.array_equal(stream.item, other.item)
    assert not np.array_equal(stream.item, synthetic_stream(300, 200, 20_000, seed=3, drift=1.0).item)
    assert np.array_equal(load("synthetic", n_users=300, n_items=200, n_interactions=20_000, seed=3).item,
                          stream.item)


def test_arrivals_and_popularity(stream):
    # entities keep arriving: every month brings new users and new items
    seg = prepare_stream(stream, segmentation="time", window="month", replay=0.0).segments
    assert len(seg) >= 12
    assert all(b.n_users > a.n_users and b.n_items > a.n_items for a, b in zip(seg[:6], seg[1:7]))
    # power-law popularity: the top 5 % of items hold far more than 5 % of the interactions
    counts = np.sort(np.bincount(stream.item))[::-1]
    assert counts[:10].sum() > 0.25 * len(stream)
    assert np.bincount(stream.user).max() < 0.05 * len(stream)  # no user dominates


def test_taste_shapes_the_choice():
    # with the same popularity draws, a user's items are more alike (in repeat rate) than chance
    s = synthetic_stream(200, 400, 30_000, seed=0)
    pairs = s.user * s.n_items + s.item
    repeat = 1 - np.unique(pairs).size / pairs.size
    shuffled = s.user * s.n_items + np.random.default_rng(0).permutation(s.item)
    assert repeat > 1 - np.unique(shuffled).size / shuffled.size


@pytest.mark.parametrize("kw, match", [
    (dict(n_users=10, n_items=10, n_interactions=19), "n_interactions must be >="),
    (dict(n_users=0, n_items=10, n_interactions=19), "n_users must be"),
    (dict(n_users=10, n_items=10, n_interactions=30, alpha=0), "alpha must be"),
    (dict(n_users=10, n_items=10, n_interactions=30, drift=-1), "drift must be"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        synthetic_stream(**kw)
