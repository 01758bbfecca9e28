"""prepare_stream against hand-computed small cases, and leak checks on real and random streams."""
import numpy as np
import pytest
import torch

from pyscall.app.data import Interactions, load_online_retail, prepare_stream

# Ten rows, one per second, ids already in first-appearance order.
PAIRS = [[0, 0], [1, 1], [0, 1], [1, 0], [2, 0], [2, 1], [0, 2], [2, 0], [0, 0], [1, 2]]


def make(pairs, times=None) -> Interactions:
    pairs = np.asarray(pairs, dtype=np.int64)
    times = np.arange(len(pairs)) if times is None else np.asarray(times)
    n_u, n_i = int(pairs[:, 0].max()) + 1, int(pairs[:, 1].max()) + 1
    return Interactions.from_codes(pairs[:, 0], pairs[:, 1], times, np.arange(n_u), np.arange(n_i), "test")


def rows(a):
    return np.asarray(a).tolist()


def test_count_segments_split_protocol():
    s = prepare_stream(make(PAIRS), segmentation="count", n_segments=2, replay=0.0, split=(0.6, 0.2, 0.2))
    assert len(s.segments) == 2 and (s.n_users, s.n_items) == (3, 3)
    s0, s1 = s.segments
    # segment 0: train rows 0-2, valid row 3, test row 4 has user 2, unknown before the test part: waits
    assert (s0.index, s0.n_users, s0.n_items) == (0, 2, 2)
    assert rows(s0.train) == [[0, 0], [1, 1], [0, 1]]
    assert rows(s0.valid) == [[1, 0]]
    assert s0.test.shape == (0, 2) and s0.history.shape == (0, 2)
    # segment 1: train rows 5-7; valid row 8 (0,0) is already in history; test row 9 is new
    assert (s1.index, s1.n_users, s1.n_items) == (1, 3, 3)
    assert rows(s1.train) == PAIRS[5:8]
    assert s1.valid.shape == (0, 2)
    assert rows(s1.test) == [[1, 2]]
    assert rows(s1.history) == PAIRS[:5]
    for seg in s.segments:
        for a in (seg.train, seg.valid, seg.test, seg.history):
            assert a.dtype == np.int64 and a.ndim == 2 and a.shape[1] == 2


def test_paper_protocol_is_80_20_without_valid():
    s = prepare_stream(make(PAIRS), segmentation="count", n_segments=2, replay=0.0, protocol="paper")
    s0, s1 = s.segments
    assert rows(s0.train) == PAIRS[:4] and s0.valid.shape == (0, 2) and s0.test.shape == (0, 2)
    assert rows(s1.train) == PAIRS[5:9] and rows(s1.test) == [[1, 2]]


def test_replay_takes_rows_of_active_users_from_history():
    # Active users of segment 1's training part: {2, 0}; history rows of those users: 0, 2, 4.
    s = prepare_stream(make(PAIRS), segmentation="count", n_segments=2, replay=1.0, split=(0.6, 0.2, 0.2))
    s0, s1 = s.segments
    assert rows(s0.train) == [[0, 0], [1, 1], [0, 1]]  # no replay in segment 0
    assert rows(s1.train) == [[0, 0], [0, 1], [2, 0]] + [list(p) for p in PAIRS[5:8]]
    assert s1.user_frequency().tolist() == [3, 0, 3]
    assert s1.item_frequency().tolist() == [3, 2, 1]
    assert s1.user_frequency().dtype == np.int64
    # 40 % of |D_1| = 2 rows, drawn from those three, kept in time order, reproducible from the seed
    picks = set()
    for seed in range(8):
        seg = prepare_stream(make(PAIRS), segmentation="count", n_segments=2, replay=0.4,
                             split=(0.6, 0.2, 0.2), seed=seed).segments[1]
        again = prepare_stream(make(PAIRS), segmentation="count", n_segments=2, replay=0.4,
                               split=(0.6, 0.2, 0.2), seed=seed).segments[1]
        assert rows(seg.train) == rows(again.train)
        replayed = rows(seg.train[:2])
        assert len(replayed) == 2 and rows(seg.train[2:]) == [list(p) for p in PAIRS[5:8]]
        assert all(r in [[0, 0], [0, 1], [2, 0]] for r in replayed)
        assert [[0, 0], [0, 1], [2, 0]].index(replayed[0]) < [[0, 0], [0, 1], [2, 0]].index(replayed[1])
        picks.add(tuple(map(tuple, replayed)))
    assert len(picks) > 1  # the seed matters


def test_new_entities_segmentation():
    # new users+items per row: 2, 2, 0, 0, 1, 0, 1, 0, 0, 0
    bounds = lambda s: [len(seg.history) for seg in s.segments] + [len(PAIRS)]
    assert bounds(prepare_stream(make(PAIRS), threshold=3, replay=0.0)) == [0, 2, 10]
    assert bounds(prepare_stream(make(PAIRS), threshold=0, replay=0.0)) == [0, 1, 2, 5, 7, 10]
    assert bounds(prepare_stream(make(PAIRS), threshold=100, replay=0.0)) == [0, 10]


def test_time_segmentation_windows():
    day = 86400
    jan4_23h = 3 * day + 23 * 3600  # Sunday 1970-01-04
    times = [0, day - 1, day, jan4_23h, 4 * day, 31 * day - 1, 31 * day, 31 * day + 5, 40 * day, 40 * day]
    inter = make(PAIRS, times)

    def bounds(**kw):
        s = prepare_stream(inter, segmentation="time", replay=0.0, **kw)
        return [len(seg.history) for seg in s.segments] + [len(PAIRS)]
    assert bounds(window="day") == [0, 2, 3, 4, 5, 6, 8, 10]
    assert bounds(window="week") == [0, 4, 5, 8, 10]  # weeks start on Monday 1970-01-05
    assert bounds(window="month") == [0, 6, 10]
    assert bounds(window=31 * day) == [0, 6, 10]  # windows of seconds counted from the first time
    assert bounds(window=10 * day) == [0, 5, 8, 10]


def test_k_core_iterates_to_a_fixed_point():
    # k=2: item 2 has one row; dropping it leaves user 2 with one row; dropping that leaves item 1 with 2.
    inter = make([(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 2)])
    s = prepare_stream(inter, k_core=2, segmentation="count", n_segments=1, replay=0.0, split=(1.0, 0.0, 0.0))
    assert (s.n_users, s.n_items) == (2, 2)
    assert rows(s.segments[0].train) == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert s.config["k_core"] == 2 and s.config["n_interactions"] == 4


@pytest.mark.parametrize("kw, match", [
    (dict(segmentation="random"), "segmentation must be one of"),
    (dict(segmentation="count"), "needs n_segments"),
    (dict(segmentation="time", window="year"), "window must be one of"),
    (dict(protocol="leaky"), "protocol must be one of"),
    (dict(split=(0.5, 0.1, 0.1)), "split must be"),
    (dict(replay=1.5), "replay must be in"),
    (dict(k_core=0), "k_core must be"),
    (dict(threshold=-1), "threshold must be"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        prepare_stream(make(PAIRS), **kw)
    with pytest.raises(TypeError, match="Interactions"):
        prepare_stream(np.asarray(PAIRS))


def check_no_leak(stream, m):
    """Every structural promise of a Stream, checked segment by segment."""
    total = 0
    prev = (0, 0)
    for t, seg in enumerate(stream.segments):
        assert seg.index == t and len(seg.history) == total
        assert seg.n_users >= prev[0] and seg.n_items >= prev[1]
        prev = (seg.n_users, seg.n_items)
        n_i = stream.n_items
        code = lambda a: set((a[:, 0] * n_i + a[:, 1]).tolist())
        train_set = code(seg.history) | code(seg.train)
        valid, test = code(seg.valid), code(seg.test)
        assert not (test & train_set) and not (valid & train_set) and not (test & valid)
        assert len(valid) == len(seg.valid) and len(test) == len(seg.test)  # no repeats
        for a in (seg.train, seg.valid, seg.test):
            if len(a):
                assert a[:, 0].max() < seg.n_users and a[:, 1].max() < seg.n_items
        assert seg.user_frequency().shape == (seg.n_users,) and seg.item_frequency().shape == (seg.n_items,)
        assert seg.user_frequency().sum() == len(seg.train)
        if t + 1 < len(stream.segments):
            total = len(stream.segments[t + 1].history)
    assert total <= m


@pytest.mark.parametrize("kw", [
    dict(threshold=1500),
    dict(segmentation="time", window="month", protocol="paper"),
    dict(segmentation="count", n_segments=6, k_core=5, replay=0.3),
])
def test_online_retail_stream_has_no_leak(online_retail, kw):
    s = prepare_stream(online_retail, **kw)
    assert len(s.segments) > 3
    check_no_leak(s, len(online_retail))
    assert sum(len(seg.test) for seg in s.segments) > 1000


def test_random_streams_have_no_leak():
    rng = np.random.default_rng(0)
    for trial in range(20):
        m = int(rng.integers(1, 300))
        pairs = np.stack([rng.integers(0, 15, m), rng.integers(0, 12, m)], axis=1)
        inter = Interactions.from_codes(pairs[:, 0], pairs[:, 1], rng.integers(0, 50, m), np.arange(15),
                                        np.arange(12), "random")
        kw = [dict(threshold=int(rng.integers(0, 10))), dict(segmentation="time", window=7),
              dict(segmentation="count", n_segments=int(rng.integers(1, m + 1)))][trial % 3]
        s = prepare_stream(inter, replay=float(rng.random()), protocol=("split", "paper")[trial % 2],
                           seed=trial, **kw)
        check_no_leak(s, m)


@pytest.fixture(scope="module")
def online_retail():
    return load_online_retail()


def test_dedup_first_keeps_each_pair_at_its_first_interaction():
    s = prepare_stream(make(PAIRS), segmentation="count", n_segments=1, replay=0.0, split=(1.0, 0.0, 0.0),
                       dedup="first")
    # rows 7 (2,0) and 8 (0,0) repeat earlier pairs
    assert rows(s.segments[0].train) == PAIRS[:7] + PAIRS[9:]
    assert s.config["dedup"] == "first"
    with pytest.raises(ValueError, match="dedup"):
        prepare_stream(make(PAIRS), dedup="last")


def test_paper_setting_on_the_embedded_data(online_retail):
    # the numbers the authors' code gives for this setting (first purchase of each pair, then 10-core)
    s = prepare_stream(online_retail, dedup="first", k_core=10, segmentation="new-entities", threshold=1500,
                       protocol="paper")
    assert (s.config["n_interactions"], s.n_users, s.n_items) == (259_868, 3_696, 2_782)
    assert len(s.segments) == 5


def _brute_paper_metrics(scores, train, test, k=20):
    """The paper code's evaluation, written out user by user."""
    train_users, train_items = set(train[:, 0]), set(train[:, 1])
    users = sorted(set(test[:, 0]) & train_users)
    cands = sorted(set(test[:, 1]) & train_items)
    seen = {tuple(p) for p in train}
    recall, ndcg = [], []
    for u in users:
        relevant = {i for uu, i in test if uu == u and i in cands}
        ranked = sorted((i for i in cands if (u, i) not in seen), key=lambda i: -scores[u, i])[:k]
        hits = [1.0 if i in relevant else 0.0 for i in ranked]
        recall.append(sum(hits) / max(len(relevant), 1))
        dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / np.log2(r + 2) for r in range(min(k, len(relevant))))
        ndcg.append(dcg / idcg if idcg else 0.0)
    return np.mean(recall), np.mean(ndcg), len(users)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_evaluation_matches_brute_force(seed):
    from pyscall.app.metrics import ranking_metrics
    rng = np.random.default_rng(seed)
    pairs = np.stack([rng.integers(0, 40, 1500), rng.integers(0, 60, 1500)], axis=1)
    s = prepare_stream(make(pairs), segmentation="count", n_segments=3, replay=0.2, protocol="paper", seed=seed)
    for seg in s.segments[1:]:
        ev = seg.evaluation("test")
        scores = torch.from_numpy(rng.normal(size=(seg.n_users, seg.n_items)))
        m = ranking_metrics(lambda ids: scores[ids].clone(), ev.pairs, ev.mask, seg.n_items, ks=(20,),
                            candidates=ev.candidates, users=ev.users)
        r, n, count = _brute_paper_metrics(scores.numpy(), seg.train, seg.test)
        assert m["n_users"] == count > 0
        assert m["recall@20"] == pytest.approx(r, abs=1e-12) and m["ndcg@20"] == pytest.approx(n, abs=1e-12)
        # some evaluated users have no relevant candidate and count as 0
        assert len(np.unique(ev.pairs[:, 0])) <= count
    with pytest.raises(ValueError, match="no validation part"):
        s.segments[1].evaluation("valid")
