"""A synthetic interaction stream of any size: power-law popularity, arrivals over time, drifting tastes."""
from __future__ import annotations

import numpy as np

from .interactions import Interactions

START = 1_577_836_800  # 2020-01-01 00:00:00 UTC
SPAN = 365 * 86_400  # one year of interactions
MONTH = 30 * 86_400
_AT_START = 0.2  # share of users and items present from the first second
_CANDIDATES = 8  # items drawn by popularity, of which the user picks by taste
_TASTE = 2.0  # logit scale of the taste score (its std) against Gumbel noise of std ~1.3
_CHUNK = 1 << 16  # rows per vectorised step: bounds the [chunk, candidates, dim] temporaries


def synthetic_stream(n_users, n_items, n_interactions, *, dim=16, alpha=1.1, drift=0.05, seed=0) -> Interactions:
    """A year of implicit feedback from ``n_users`` users on ``n_items`` items, deterministic in ``seed``.

    - Arrivals: 20 % of users and items exist from the start, the others arrive at uniform times over
      the year; every user and every item has one interaction at its arrival (so all of them appear,
      and ``n_interactions >= n_users + n_items`` is required); the other interactions fall at uniform
      times.
    - Power law: item popularity is a Zipf weight ``rank ** -alpha`` over a random ranking, user
      activity the flatter ``rank ** -(alpha / 2)`` (real logs have no user with 5 % of all rows). An interaction picks an active user by activity among the users already arrived, draws
      8 candidate items by popularity among the items already arrived, and keeps one by taste: a
      softmax (Gumbel-max) over ``2 * <u(t), v>`` with unit-variance hidden factors of size ``dim``.
    - Drift: a user's factor moves along its own random direction, ``u(t) = u0 + drift * months * d``
      with months counted from the user's arrival (``drift=0.05``: 0.6 of the factor's norm a year).

    Vectorised in chunks; 1M users, 1M items, 20M interactions need a few GB (see the data report).
    Ids of the result are re-indexed by first appearance; ``user_keys``/``item_keys`` hold the
    generator's ids as strings.
    """
    n_users, n_items, n_interactions, dim = (_positive(name, v) for name, v in (
        ("n_users", n_users), ("n_items", n_items), ("n_interactions", n_interactions), ("dim", dim)))
    if n_interactions < n_users + n_items:
        raise ValueError(f"n_interactions must be >= n_users + n_items = {n_users + n_items} (every entity "
                         f"interacts at its arrival), got {n_interactions}")
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if not (np.isfinite(drift) and drift >= 0):
        raise ValueError(f"drift must be a finite number >= 0, got {drift!r}")

    rng = np.random.default_rng(seed)
    user_arrival = _arrivals(rng, n_users)
    item_arrival = _arrivals(rng, n_items)
    # cumulative weights in arrival (= id) order; users get the flatter law so no single user dominates
    user_weight = np.cumsum(_zipf(rng, n_users, alpha / 2))
    item_weight = np.cumsum(_zipf(rng, n_items, alpha))
    scale = np.float32(dim ** -0.25)  # <u, v> has unit variance
    user_factor = (rng.standard_normal((n_users, dim), dtype=np.float32) * scale)
    user_direction = (rng.standard_normal((n_users, dim), dtype=np.float32) * scale)
    item_factor = (rng.standard_normal((n_items, dim), dtype=np.float32) * scale)

    n_rest = n_interactions - n_users - n_items
    time = np.concatenate([user_arrival, item_arrival, START + rng.integers(0, SPAN, n_rest)])
    user = np.empty(n_interactions, dtype=np.int64)
    item = np.empty(n_interactions, dtype=np.int64)
    user[:n_users] = np.arange(n_users)
    item[n_users:n_users + n_items] = np.arange(n_items)
    # users for the item-arrival rows and the free rows, by activity among the arrived users
    rows = np.arange(n_users, n_interactions)
    user[rows] = _pick_arrived(rng, user_weight, user_arrival, time[rows])
    # items for the user-arrival rows and the free rows, by popularity then taste
    rows = np.concatenate([np.arange(n_users), np.arange(n_users + n_items, n_interactions)])
    for c0 in range(0, rows.size, _CHUNK):
        r = rows[c0:c0 + _CHUNK]
        t, u = time[r], user[r]
        cand = _pick_arrived(rng, item_weight, item_arrival, np.repeat(t, _CANDIDATES)).reshape(-1, _CANDIDATES)
        months = ((t - user_arrival[u]) / MONTH).astype(np.float32)
        taste = user_factor[u] + (drift * months)[:, None] * user_direction[u]
        logits = _TASTE * np.einsum("bd,bcd->bc", taste, item_factor[cand])
        choice = np.argmax(logits + rng.gumbel(size=logits.shape).astype(np.float32), axis=1)
        item[r] = cand[np.arange(r.size), choice]

    source = (f"synthetic(n_users={n_users}, n_items={n_items}, n_interactions={n_interactions}, dim={dim}, "
              f"alpha={alpha}, drift={drift}, seed={seed})")
    return Interactions.from_codes(user, item, time, np.arange(n_users), np.arange(n_items), source)


def _positive(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _arrivals(rng, n) -> np.ndarray:
    """Sorted arrival times: id 0 and a share of the others at START, the rest uniform over the year."""
    late = rng.random(n) >= _AT_START
    late[0] = False
    return np.sort(np.where(late, START + rng.integers(0, SPAN, n), START))


def _zipf(rng, n, alpha) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.float64)[rng.permutation(n)] ** -alpha


def _pick_arrived(rng, cum_weight, arrival, time) -> np.ndarray:
    """For each time, an id drawn by weight among the ids arrived by then (a prefix of the ids)."""
    arrived = np.searchsorted(arrival, time, side="right")  # >= 1: id 0 arrives at START
    r = rng.random(time.size) * cum_weight[arrived - 1]
    order = np.argsort(r)  # sorted queries walk the table in order: about 2x faster than random ones
    picked = np.empty(time.size, dtype=np.int64)
    picked[order] = np.searchsorted(cum_weight, r[order], side="right")
    return np.minimum(picked, arrived - 1)
