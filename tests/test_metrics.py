"""ranking_metrics against a brute-force per-user implementation on small random cases."""
import math

import numpy as np
import pytest
import torch

from pyscall.app.metrics import ranking_metrics


def brute_force(scores, eval_pairs, mask_pairs, ks, candidates=None):
    n_users, n_items = scores.shape
    allowed = set(range(n_items)) if candidates is None else set(int(c) for c in candidates)
    held = {}
    for u, i in eval_pairs.tolist():
        if i in allowed:
            held.setdefault(u, set()).add(i)
    masked = {}
    for u, i in mask_pairs.tolist():
        masked.setdefault(u, set()).add(i)
    out = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg")}
    for u, h in held.items():
        ranked = [i for i in sorted(range(n_items), key=lambda i: -scores[u, i])
                  if i in allowed and i not in masked.get(u, set())]
        for k in ks:
            top = ranked[:k]
            out[f"recall@{k}"] += sum(i in h for i in top) / len(h)
            dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(top) if i in h)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(h))))
            out[f"ndcg@{k}"] += dcg / idcg
    out = {key: v / len(held) for key, v in out.items()}
    out["n_users"] = len(held)
    return out


def scorer(table, calls=None):
    def score_fn(users):
        assert users.dtype == torch.int64
        if calls is not None:
            calls.append(users.tolist())
        return table[users].clone()  # a fresh tensor: ranking_metrics masks it in place
    return score_fn


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = int(rng.integers(1, 20)), int(rng.integers(1, 40))
    table = torch.from_numpy(rng.standard_normal((n_users, n_items)))  # distinct scores: no ties
    eval_pairs = np.stack([rng.integers(0, n_users, 30), rng.integers(0, n_items, 30)], axis=1)
    mask_pairs = np.stack([rng.integers(0, n_users, 60), rng.integers(0, n_items, 60)], axis=1)
    ks = (1, 3, 5, 50)
    candidates = rng.choice(n_items, size=max(1, n_items // 2), replace=False) if seed % 2 else None
    calls = []
    got = ranking_metrics(scorer(table, calls), eval_pairs, mask_pairs, n_items, ks=ks,
                          chunk_users=int(rng.integers(1, 5)), candidates=candidates)
    want = brute_force(table.numpy(), eval_pairs, mask_pairs, ks, candidates)
    assert got["n_users"] == want["n_users"] and got.keys() == want.keys()
    for key in want:
        if key != "n_users":
            assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert sorted(u for chunk in calls for u in chunk) == sorted({u for u, _ in eval_pairs.tolist()}
                                                                 if candidates is None else
                                                                 {u for u, i in eval_pairs.tolist()
                                                                  if i in set(candidates.tolist())})


def test_hand_computed_case():
    # user 0 ranks items 3 > 2 > 1 > 0, item 3 masked; held-out {1, 0}: list 2, 1, 0 -> hits at ranks 2, 3
    table = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float32)
    got = ranking_metrics(scorer(table), np.array([[0, 1], [0, 0], [0, 1]]), np.array([[0, 3]]), 4, ks=(1, 2, 3))
    assert got["recall@1"] == 0.0 and got["recall@2"] == 0.5 and got["recall@3"] == 1.0
    assert got["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert got["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert got["n_users"] == 1


def test_no_held_out_users_and_bad_input():
    table = torch.zeros(2, 3)
    empty = np.empty((0, 2), dtype=np.int64)
    got = ranking_metrics(scorer(table), empty, empty, 3, ks=(2,))
    assert got["n_users"] == 0 and math.isnan(got["recall@2"])
    with pytest.raises(TypeError, match="int64 numpy array"):
        ranking_metrics(scorer(table), np.array([[0, 1]], dtype=np.int32), empty, 3)
    with pytest.raises(ValueError, match=r"shape \[m, 2\]"):
        ranking_metrics(scorer(table), np.array([0, 1]), empty, 3)
    with pytest.raises(ValueError, match="item ids in"):
        ranking_metrics(scorer(table), np.array([[0, 3]]), empty, 3)
    with pytest.raises(ValueError, match=r"expected \[1, 3\]"):
        ranking_metrics(lambda u: torch.zeros(1, 4), np.array([[0, 1]]), empty, 3)
    with pytest.raises(TypeError, match="floating-point"):
        ranking_metrics(lambda u: torch.zeros(1, 3, dtype=torch.int64), np.array([[0, 1]]), empty, 3)
