"""The in-memory form of an interaction log: time-sorted, ids re-indexed by first appearance."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interactions:
    """Implicit-feedback interactions sorted by time (stable), ids in order of first appearance.

    Because ids are numbered in the order entities first appear, the vocabulary at any point of the
    stream is a prefix ``0..n-1`` and new entities are appended at the end.
    """

    user: np.ndarray  # int64 [m]
    item: np.ndarray  # int64 [m]
    time: np.ndarray  # int64 [m], unix seconds, non-decreasing
    n_users: int
    n_items: int
    user_keys: np.ndarray  # str array [n_users]: original key of each new id
    item_keys: np.ndarray  # str array [n_items]
    source: str

    def __len__(self) -> int:
        return int(self.user.shape[0])

    @classmethod
    def from_codes(cls, user_codes, item_codes, time, user_keys, item_keys, source) -> "Interactions":
        """Sort by time (stable) and renumber users/items by first appearance.

        ``user_codes[k]`` indexes ``user_keys`` (any order); keys that never occur are dropped.
        """
        time = np.asarray(time, dtype=np.int64)
        order = np.argsort(time, kind="stable")
        user, user_keys = _first_appearance(np.asarray(user_codes, dtype=np.int64)[order], user_keys)
        item, item_keys = _first_appearance(np.asarray(item_codes, dtype=np.int64)[order], item_keys)
        return cls(user=user, item=item, time=time[order], n_users=len(user_keys), n_items=len(item_keys),
                   user_keys=user_keys, item_keys=item_keys, source=source)

    def select(self, keep: np.ndarray, source: str | None = None) -> "Interactions":
        """The rows where ``keep`` is true, re-indexed by first appearance (order and times kept)."""
        return Interactions.from_codes(self.user[keep], self.item[keep], self.time[keep],
                                       self.user_keys, self.item_keys, source or self.source)


def _first_appearance(codes: np.ndarray, keys) -> tuple[np.ndarray, np.ndarray]:
    """Map codes to 0..k-1 in order of first occurrence; return (new ids, keys of the new ids)."""
    keys = np.asarray(keys)
    if keys.dtype.kind != "U":
        keys = keys.astype(str)
    if codes.size == 0:
        return codes.copy(), keys[:0]
    uniq, first = np.unique(codes, return_index=True)
    by_appearance = uniq[np.argsort(first, kind="stable")]
    new_id = np.empty(int(uniq[-1]) + 1, dtype=np.int64)
    new_id[by_appearance] = np.arange(by_appearance.size, dtype=np.int64)
    return new_id[codes], keys[by_appearance]
