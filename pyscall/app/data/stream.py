"""Cut a time-sorted interaction log into segments D_0..D_T with train/valid/test parts (SCALL.md section 1)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np

from .interactions import Interactions

SEGMENTATIONS = ("new-entities", "time", "count")
PROTOCOLS = ("split", "paper")
DEDUPS = (None, "first")
_WINDOWS = ("day", "week", "month")
_NO_PAIRS = np.empty((0, 2), dtype=np.int64)


class EvalSet(NamedTuple):
    """What `metrics.ranking_metrics` needs to score one held-out part of a segment."""
    pairs: np.ndarray                  # held-out (user, item) pairs
    mask: np.ndarray                   # pairs never ranked (the training data)
    candidates: Optional[np.ndarray]   # items ranked; None: the whole catalogue
    users: Optional[np.ndarray]        # users averaged over; None: the users of ``pairs``


@dataclass
class Segment:
    """One segment of the stream. Pair arrays are int64 [m, 2] rows of (user, item)."""

    index: int
    n_users: int  # usable vocabulary: ids < n_users (everything seen in history or in ``train``)
    n_items: int
    train: np.ndarray  # the segment's training part; replay rows from earlier segments come first
    valid: np.ndarray  # empty under protocol="paper"
    test: np.ndarray
    history: np.ndarray  # every interaction of earlier segments (all parts), chronological
    protocol: str = "split"
    # protocol "split": the training set is history + train; evaluation masks history + train (+ valid for
    # test) and ranks the whole catalogue. valid/test hold only known ids, no pair of the mask, no pair twice.
    # protocol "paper" (the paper code): the training set is train alone (replay + first 80%), see `evaluation`.

    def training_pairs(self) -> np.ndarray:
        """The pairs a model of this segment learns from: its graph and its negative sampler's positives."""
        if self.protocol == "paper":
            return self.train
        return np.concatenate([self.history, self.train]) if len(self.history) else self.train

    def evaluation(self, part: str) -> EvalSet:
        """How ``part`` ("valid" or "test") is scored.

        "split": its pairs over the full catalogue, masking history + train (+ valid for test).
        "paper" (test only; it also early-stops and rewards): the test users and the test items that occur
        in ``train`` are the evaluated users and the candidates; a user's relevant items are its test pairs
        among them (a user with none scores 0); ``train`` is masked.
        """
        if part not in ("valid", "test"):
            raise ValueError(f"part must be 'valid' or 'test', got {part!r}")
        if self.protocol == "paper":
            if part == "valid":
                raise ValueError("protocol 'paper' has no validation part: the test part is used")
            users = np.intersect1d(self.test[:, 0], self.train[:, 0])
            items = np.intersect1d(self.test[:, 1], self.train[:, 1])
            relevant = self.test[np.isin(self.test[:, 0], users) & np.isin(self.test[:, 1], items)]
            return EvalSet(relevant, self.train, items, users)
        mask = [self.history, self.train] + ([self.valid] if part == "test" else [])
        return EvalSet(getattr(self, part), np.concatenate(mask), None, None)

    def user_frequency(self) -> np.ndarray:
        """int64 [n_users]: interactions of each user in ``train`` (replay included)."""
        return np.bincount(self.train[:, 0], minlength=self.n_users).astype(np.int64, copy=False)

    def item_frequency(self) -> np.ndarray:
        """int64 [n_items]: interactions of each item in ``train`` (replay included)."""
        return np.bincount(self.train[:, 1], minlength=self.n_items).astype(np.int64, copy=False)


@dataclass
class Stream:
    segments: list[Segment]
    n_users: int
    n_items: int
    source: str
    config: dict = field(default_factory=dict)


def prepare_stream(inter: Interactions, *, k_core=None, segmentation="new-entities", threshold=15000,
                   window="month", n_segments=None, replay=0.2, protocol="split", split=(0.7, 0.1, 0.2),
                   seed=0, dedup=None) -> Stream:
    """Segment ``inter`` and split every segment chronologically.

    - ``dedup="first"``: keep each (user, item) pair at its first interaction only (the paper code's
      setting), before the k-core filter; None keeps repeats (they count in frequencies and the graph).

    - ``k_core``: keep only users and items with at least ``k_core`` interactions (iterated to a fixed
      point), then re-index by first appearance.
    - ``segmentation="new-entities"`` (paper): a segment ends with the row at which the number of users
      plus items first seen since the segment began exceeds ``threshold``. ``"time"``: calendar
      windows in UTC, ``window`` in {"day", "week" (from Monday), "month"} or a number of seconds
      (windows counted from the first timestamp); empty windows produce no segment. ``"count"``:
      ``n_segments`` segments of equal size (sizes differ by at most one).
    - ``protocol="split"``: train / valid / test = ``split`` of each segment, in time order (sizes
      rounded). ``"paper"``: train = the first ``split[0] + split[1]`` (80 % by default), test = the
      rest, valid empty; the caller then uses test for early stopping and rewards, as the paper does.
    - ``replay``: for segments t >= 1, ``round(replay * |D_t|)`` rows sampled uniformly without
      replacement (seeded by ``(seed, t)``) from earlier segments, among the rows of users active in the
      current training part (the held-out tail is not looked at), prepended to ``train`` in time order.
    - Held-out rows whose user or item is first seen after the training part are dropped (they wait for
      the next segment, where they are history); so are held-out pairs already in the training set or
      (for test) in valid, and repeats.
    """
    _check_args(inter, k_core, segmentation, threshold, window, n_segments, replay, protocol, split)
    if dedup not in DEDUPS:
        raise ValueError(f"dedup must be one of {DEDUPS}, got {dedup!r}")
    if dedup == "first":
        inter = _first_pairs(inter)
    if k_core is not None:
        inter = _k_core(inter, int(k_core))
    m = len(inter)
    user, item = inter.user, inter.item
    pairs = np.stack([user, item], axis=1)
    code = user * max(inter.n_items, 1) + item  # one int64 per (user, item) pair
    last_user = np.maximum.accumulate(user) if m else user  # ids arrive in order: cummax + 1 = vocabulary
    last_item = np.maximum.accumulate(item) if m else item

    bounds = _segment_bounds(inter, segmentation, threshold, window, n_segments, last_user, last_item)
    f_train = split[0] + split[1] if protocol == "paper" else split[0]
    f_valid = 0.0 if protocol == "paper" else split[1]

    segments = []
    seen = np.empty(0, dtype=np.int64)  # sorted pair codes of all earlier segments
    for t, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        size = e - s
        a = s + round(size * f_train)
        b = min(e, s + round(size * (f_train + f_valid)))
        n_u = int(last_user[a - 1]) + 1 if a > 0 else 0
        n_i = int(last_item[a - 1]) + 1 if a > 0 else 0

        train = pairs[s:a]
        if t > 0 and replay > 0:
            train = np.concatenate([pairs[_replay_rows(user, s, train[:, 0], n_u, round(replay * size), seed, t)],
                                    train])
        masked = _merge(seen, code[s:a])
        valid = _held_out(pairs, code, a, b, n_u, n_i, masked)
        masked = _merge(masked, valid[:, 0] * max(inter.n_items, 1) + valid[:, 1])
        test = _held_out(pairs, code, b, e, n_u, n_i, masked)
        segments.append(Segment(index=t, n_users=n_u, n_items=n_i, train=np.ascontiguousarray(train),
                                valid=valid, test=test, history=pairs[:s], protocol=protocol))
        seen = _merge(seen, code[s:e])

    config = dict(dedup=dedup, k_core=k_core, segmentation=segmentation, threshold=threshold, window=window,
                  n_segments=len(segments), replay=replay, protocol=protocol, split=tuple(split), seed=seed,
                  n_interactions=m)
    return Stream(segments=segments, n_users=inter.n_users, n_items=inter.n_items, source=inter.source,
                  config=config)


def _check_args(inter, k_core, segmentation, threshold, window, n_segments, replay, protocol, split):
    if not isinstance(inter, Interactions):
        raise TypeError(f"prepare_stream expects pyscall.app.data.Interactions, got {type(inter).__name__}")
    if k_core is not None and (not isinstance(k_core, (int, np.integer)) or k_core < 1):
        raise ValueError(f"k_core must be None or an int >= 1, got {k_core!r}")
    if segmentation not in SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
    if segmentation == "new-entities" and (not isinstance(threshold, (int, np.integer)) or threshold < 0):
        raise ValueError(f"threshold must be an int >= 0, got {threshold!r}")
    if segmentation == "time" and window not in _WINDOWS and not (
            isinstance(window, (int, float)) and not isinstance(window, bool) and window > 0):
        raise ValueError(f"window must be one of {_WINDOWS} or a positive number of seconds, got {window!r}")
    if segmentation == "count" and (not isinstance(n_segments, (int, np.integer)) or n_segments < 1):
        raise ValueError(f"segmentation='count' needs n_segments, an int >= 1, got {n_segments!r}")
    if not 0 <= replay <= 1:
        raise ValueError(f"replay must be in [0, 1], got {replay!r}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if (len(split) != 3 or min(split) < 0 or split[0] <= 0 or not math.isclose(sum(split), 1.0)):
        raise ValueError(f"split must be 3 non-negative fractions (train, valid, test) summing to 1 with "
                         f"train > 0, got {split!r}")


def _first_pairs(inter: Interactions) -> Interactions:
    """The rows at which each (user, item) pair occurs for the first time (time order kept)."""
    _, first = np.unique(inter.user * max(inter.n_items, 1) + inter.item, return_index=True)
    keep = np.zeros(len(inter), dtype=bool)
    keep[first] = True
    return inter.select(keep, source=f"{inter.source} (first of each pair)")


def _k_core(inter: Interactions, k: int) -> Interactions:
    keep = np.ones(len(inter), dtype=bool)
    while True:  # every pass removes rows or stops, so at most m passes (a handful in practice)
        users = np.bincount(inter.user[keep], minlength=inter.n_users)
        items = np.bincount(inter.item[keep], minlength=inter.n_items)
        new_keep = keep & (users[inter.user] >= k) & (items[inter.item] >= k)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return inter.select(keep, source=f"{inter.source} ({k}-core)")


def _segment_bounds(inter, segmentation, threshold, window, n_segments, last_user, last_item) -> list[int]:
    """Row indices [0, e_0, e_1, ..., m] of the segment boundaries."""
    m = len(inter)
    if m == 0:
        return [0]
    if segmentation == "count":
        if n_segments > m:
            raise ValueError(f"n_segments={n_segments} exceeds the {m} interactions")
        return [i * m // n_segments for i in range(n_segments + 1)]
    if segmentation == "time":
        t = inter.time
        if window == "day":
            key = t // 86400
        elif window == "week":
            key = (t // 86400 + 3) // 7  # 1970-01-01 was a Thursday; shift so weeks start on Monday
        elif window == "month":
            key = t.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
        else:
            key = (t - t[0]) // window
        return [0, *(np.flatnonzero(np.diff(key)) + 1).tolist(), m]
    # new-entities: running count of users + items seen for the first time
    first_seen = np.ones(m, dtype=np.int64)
    first_seen[1:] = (last_user[1:] > last_user[:-1]).astype(np.int64) + (last_item[1:] > last_item[:-1])
    first_seen[0] = 2
    count = np.cumsum(first_seen)
    bounds, s = [0], 0
    while s < m:
        base = count[s - 1] if s > 0 else 0
        s = min(int(np.searchsorted(count, base + threshold, side="right")) + 1, m)
        bounds.append(s)
    return bounds


def _replay_rows(user, s, active, n_users, k, seed, t) -> np.ndarray:
    """Sorted indices of ``k`` rows before ``s`` whose user is in ``active`` (uniform, without replacement)."""
    is_active = np.zeros(n_users, dtype=bool)
    is_active[active] = True
    candidates = np.flatnonzero(is_active[user[:s]])
    k = min(k, candidates.size)
    rng = np.random.default_rng((seed, t))
    return np.sort(rng.choice(candidates, size=k, replace=False))


def _merge(sorted_codes, codes) -> np.ndarray:
    """Sorted union (with repeats) of a sorted array and any array; timsort merges the two runs in linear time."""
    return np.sort(np.concatenate([sorted_codes, np.sort(codes)]), kind="stable")


def _held_out(pairs, code, a, b, n_users, n_items, masked) -> np.ndarray:
    """Rows a..b-1 with known ids, not in ``masked`` (sorted codes), first occurrence of each pair."""
    if b <= a:
        return _NO_PAIRS.copy()
    part, part_code = pairs[a:b], code[a:b]
    ok = (part[:, 0] < n_users) & (part[:, 1] < n_items)
    pos = np.searchsorted(masked, part_code)
    ok &= ~((pos < masked.size) & (masked[np.minimum(pos, masked.size - 1)] == part_code))
    idx = np.flatnonzero(ok)
    _, first = np.unique(part_code[idx], return_index=True)
    return np.ascontiguousarray(part[idx[np.sort(first)]])
