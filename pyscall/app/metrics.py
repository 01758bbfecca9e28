"""Top-K ranking metrics over the full catalogue (or a candidate set), chunked over users (SCALL.md section 5)."""
from __future__ import annotations

import numpy as np
import torch

_MAX_SCORES_PER_CHUNK = 1 << 27  # 512 MB of float32 scores at most per score_fn call


def ranking_metrics(score_fn, eval_pairs, mask_pairs, n_items, ks=(5, 10, 20), chunk_users=1024,
                    candidates=None, users=None) -> dict:
    """Recall@K and NDCG@K, averaged over the users that have held-out items.

    For a user with held-out item set H (repeated pairs count once) and ranked list R (scores
    descending, masked items excluded):

    - ``recall@K = |top-K(R) & H| / |H|`` (the LightGCN definition, not divided by min(K, |H|));
    - ``ndcg@K = DCG / IDCG`` with ``DCG = sum over hits at 1-based rank r <= K of 1 / log2(r + 1)``
      and ``IDCG = sum_{r=1}^{min(K, |H|)} 1 / log2(r + 1)``.

    ``score_fn(user_ids)`` takes a LongTensor ``[b]`` (CPU) and returns a float tensor ``[b, n_items]``
    on any device; the returned tensor is overwritten (masked in place), so return a fresh one.
    ``eval_pairs`` / ``mask_pairs``: int64 numpy arrays ``[m, 2]`` of (user, item). Masked items get
    ``-inf`` before top-K and never count as hits (a held-out pair that is also masked is a miss).
    ``candidates``: optional item ids; other items are masked too and held-out pairs outside the
    candidates are dropped (the paper's candidate set). Users are scored ``chunk_users`` at a time,
    fewer when ``n_items`` is so large that a chunk would exceed 2**27 scores.
    Returns ``{"recall@5": ..., "ndcg@5": ..., ..., "n_users": evaluated users}``; metrics are NaN
    when no user has a held-out item.
    """
    n_items = int(n_items)
    eval_pairs = _pairs("eval_pairs", eval_pairs, n_items)
    mask_pairs = _pairs("mask_pairs", mask_pairs, n_items)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if not isinstance(chunk_users, int) or chunk_users < 1:
        raise ValueError(f"chunk_users must be an int >= 1, got {chunk_users!r}")

    excluded = None
    if candidates is not None:
        is_candidate = np.zeros(n_items, dtype=bool)
        cand = np.asarray(candidates, dtype=np.int64).ravel()
        if cand.size and (cand.min() < 0 or cand.max() >= n_items):
            raise ValueError(f"candidates must be item ids in [0, {n_items})")
        is_candidate[cand] = True
        eval_pairs = eval_pairs[is_candidate[eval_pairs[:, 1]]]
        excluded = torch.from_numpy(np.flatnonzero(~is_candidate))

    held = np.unique(eval_pairs[:, 0] * n_items + eval_pairs[:, 1])  # sorted by (user, item), no repeats
    if users is None:
        users, first = np.unique(held // n_items, return_index=True)
        n_held = np.diff(np.append(first, held.size))
    else:
        users = np.unique(np.asarray(users, dtype=np.int64).ravel())
        if users.size and users.min() < 0:
            raise ValueError("users must be ids >= 0")
        held = held[np.isin(held // n_items, users)]
        n_held = np.bincount(np.searchsorted(users, held // n_items), minlength=users.size)
    masked = np.unique(mask_pairs[:, 0] * n_items + mask_pairs[:, 1])

    k_top = min(ks[-1], n_items)
    discount = 1.0 / np.log2(np.arange(2, k_top + 2))
    ideal = np.concatenate([[0.0], np.cumsum(discount)])  # ideal[j]: IDCG of j hits in a row
    recall_sum = np.zeros(len(ks))
    ndcg_sum = np.zeros(len(ks))
    step = min(chunk_users, max(1, _MAX_SCORES_PER_CHUNK // max(n_items, 1)))

    for c0 in range(0, users.size, step):
        uc = users[c0:c0 + step]
        scores = score_fn(torch.from_numpy(uc))
        _check_scores(scores, uc.size, n_items)
        lo, hi = np.searchsorted(masked, [uc[0] * n_items, (uc[-1] + 1) * n_items])
        block = masked[lo:hi]
        row = np.searchsorted(uc, block // n_items)
        keep = uc[row] == block // n_items  # mask rows of users outside this chunk's list
        dev = scores.device
        scores[torch.from_numpy(row[keep]).to(dev), torch.from_numpy(block[keep] % n_items).to(dev)] = -torch.inf
        if excluded is not None:
            scores[:, excluded.to(dev)] = -torch.inf
        values, top = torch.topk(scores, k_top, dim=1)
        top = top.cpu().numpy()
        top_code = uc[:, None] * n_items + top
        pos = np.minimum(np.searchsorted(held, top_code), held.size - 1)
        hit = (held[pos] == top_code) & torch.isfinite(values).cpu().numpy()
        gain = np.cumsum(hit * discount, axis=1)
        hits = np.cumsum(hit, axis=1)
        n_h = n_held[c0:c0 + step]
        for j, k in enumerate(ks):
            kk = min(k, k_top)
            has = n_h > 0  # only listed `users` can have none: they score 0
            recall_sum[j] += (hits[has, kk - 1] / n_h[has]).sum()
            ndcg_sum[j] += (gain[has, kk - 1] / ideal[np.minimum(n_h[has], kk)]).sum()

    n = users.size
    out = {}
    for j, k in enumerate(ks):
        out[f"recall@{k}"] = float(recall_sum[j] / n) if n else float("nan")
        out[f"ndcg@{k}"] = float(ndcg_sum[j] / n) if n else float("nan")
    out["n_users"] = int(n)
    return out


def _pairs(name, pairs, n_items) -> np.ndarray:
    if not isinstance(pairs, np.ndarray) or pairs.dtype != np.int64:
        got = pairs.dtype if isinstance(pairs, np.ndarray) else type(pairs).__name__
        raise TypeError(f"{name} must be an int64 numpy array [m, 2], got {got}")
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"{name} must have shape [m, 2], got {list(pairs.shape)}")
    if pairs.size and (pairs.min() < 0 or pairs[:, 1].max() >= n_items):
        raise ValueError(f"{name} must hold user ids >= 0 and item ids in [0, {n_items})")
    return pairs


def _check_scores(scores, b, n_items):
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
        raise TypeError(f"score_fn must return a floating-point torch.Tensor, got {type(scores).__name__}")
    if tuple(scores.shape) != (b, n_items):
        raise ValueError(f"score_fn returned shape {list(scores.shape)}, expected [{b}, {n_items}]")
