"""Base recommenders on ragged tables: graph normalisation, LightGCN/MF forward against float64 dense
references, BPR loss, negative sampling, and one fused training step."""
import numpy as np
import pytest
import torch

import pyscall
from pyscall.app.models import LightGCN, MF, NegativeSampler, bpr_loss, normalized_adjacency


def _tables(n_users=7, n_items=5, d_max=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    uw = torch.randint(0, d_max + 1, (n_users,), generator=g, dtype=torch.int32)
    iw = torch.randint(0, d_max + 1, (n_items,), generator=g, dtype=torch.int32)
    torch.manual_seed(seed)
    users = pyscall.Embedding(n_users, d_max, widths=uw, optimizer="adam", lr=0.01, init_std=0.5)
    items = pyscall.Embedding(n_items, d_max, widths=iw, optimizer="adam", lr=0.01, init_std=0.5)
    return users, items


def _pairs(n_users=7, n_items=5, m=20, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n_users, m), rng.integers(0, n_items, m)], 1)


def _dense_adjacency(pairs, n_users, n_items):
    a = np.zeros((n_users + n_items,) * 2)
    for u, i in pairs:
        a[u, n_users + i] = a[n_users + i, u] = 1.0
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.maximum(d, 1)), 0.0)
    return inv[:, None] * a * inv[None, :]


def test_normalized_adjacency_matches_dense_reference():
    pairs = _pairs()
    pairs = np.concatenate([pairs, pairs[:3]])  # repeats count once
    got = normalized_adjacency(pairs, 7, 5, dtype=torch.float64).to_dense().numpy()
    np.testing.assert_allclose(got, _dense_adjacency(pairs, 7, 5), rtol=1e-12, atol=0)


def test_lightgcn_propagation_matches_float64_reference():
    users, items = _tables()
    pairs = _pairs()
    model = LightGCN(users, items, layers=3)
    model.set_graph(pairs)
    fu, fi, eu, ei = model.propagate()
    e0 = torch.cat([users.to_dense(), items.to_dense()]).double().numpy()
    # zeros past each row's width, as the contract says
    for table, dense in ((users, e0[:7]), (items, e0[7:])):
        for row, w in enumerate(table.widths.tolist()):
            assert (dense[row, w:] == 0).all() and (w == 0 or np.abs(dense[row, :w]).sum() > 0)
    a = _dense_adjacency(pairs, 7, 5)
    layers = [e0]
    for _ in range(3):
        layers.append(a @ layers[-1])
    want = np.mean(layers, axis=0)
    np.testing.assert_allclose(torch.cat([fu, fi]).detach().double().numpy(), want, rtol=1e-5, atol=1e-6)
    assert fu.shape == (7, 6) and fi.shape == (5, 6) and eu.shape == (7, 6) and ei.shape == (5, 6)

    score = model.scorer()(torch.tensor([0, 3, 6]))
    np.testing.assert_allclose(score.double().numpy(), want[[0, 3, 6]] @ want[7:].T, rtol=1e-5, atol=1e-6)


def test_lightgcn_needs_a_graph_of_the_current_vocabulary():
    users, items = _tables()
    model = LightGCN(users, items)
    with pytest.raises(RuntimeError, match="set_graph"):
        model.propagate()
    model.set_graph(_pairs())
    users.append(3)
    with pytest.raises(RuntimeError, match="set_graph"):
        model.propagate()


@pytest.mark.parametrize("model_name", ["mf", "lightgcn"])
def test_batch_shapes_and_scores(model_name):
    users, items = _tables()
    model = MF(users, items) if model_name == "mf" else LightGCN(users, items)
    if model_name == "lightgcn":
        model.set_graph(_pairs())
    u, p, n = torch.tensor([0, 1, 1, 6]), torch.tensor([0, 4, 2, 3]), torch.tensor([1, 1, 3, 0])
    pos, neg, ego = model.batch(u, p, n)
    assert pos.shape == (4,) and neg.shape == (4,)
    assert all(e.shape[-1] == 6 for e in ego)
    scores = model.scorer()(u)
    assert scores.shape == (4, 5)
    np.testing.assert_allclose(scores[torch.arange(4), p].detach().numpy(), pos.detach().numpy(), rtol=1e-5,
                               atol=1e-6)
    if model_name == "mf":
        ud, id_ = users.to_dense().double(), items.to_dense().double()
        np.testing.assert_allclose(pos.detach().double().numpy(), (ud[u] * id_[p]).sum(1).numpy(), rtol=1e-5)


def test_bpr_loss_formula():
    g = torch.Generator().manual_seed(1)
    pos, neg = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    ego = [torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(16, 4, generator=g,
                                                                            dtype=torch.float64)]
    want = np.mean(np.log1p(np.exp(neg.numpy() - pos.numpy()))) + 1e-3 * sum(
        (e.numpy() ** 2).sum() for e in ego) / 2 / 8
    assert bpr_loss(pos, neg, ego, l2=1e-3).item() == pytest.approx(want, rel=1e-12)


def test_negative_sampler_avoids_positives_and_is_seeded():
    positives = np.array([[0, i] for i in range(18)] + [[1, 3], [2, 0]])
    sampler = NegativeSampler(positives, n_items=20, rounds=300)  # 0.9 ** 300: none left
    users = torch.tensor([0] * 500 + [1] * 500)
    neg = sampler.sample(users, torch.Generator().manual_seed(3))
    assert neg.dtype == torch.int64 and neg.shape == (1000,)
    assert ((neg >= 0) & (neg < 20)).all()
    assert set(neg[:500].tolist()) <= {18, 19}          # user 0 has only two negatives left
    assert 3 not in set(neg[500:].tolist())
    again = sampler.sample(users, torch.Generator().manual_seed(3))
    assert torch.equal(neg, again)


@pytest.mark.parametrize("model_name", ["mf", "lightgcn"])
def test_fused_training_lowers_the_loss(model_name):
    users, items = _tables(20, 15, 8, seed=2)
    model = MF(users, items) if model_name == "mf" else LightGCN(users, items)
    pairs = _pairs(20, 15, 60, seed=2)
    if model_name == "lightgcn":
        model.set_graph(pairs)
    u, p = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    n = NegativeSampler(pairs, 15).sample(u, torch.Generator().manual_seed(0))
    losses = []
    for _ in range(30):
        pos, neg, ego = model.batch(u, p, n)
        loss = bpr_loss(pos, neg, ego)
        loss.backward()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert users.widths.tolist() == _tables(20, 15, 8, seed=2)[0].widths.tolist()  # widths untouched


def test_lightgcn_propagates_only_up_to_the_widest_row():
    users, items = _tables()
    model = LightGCN(users, items, layers=2)
    model.set_graph(_pairs())
    widest = max(int(users.widths.max()), int(items.widths.max()))
    for table in (users, items):
        table.set_widths(torch.clamp(table.widths, max=3))
    fu, fi, eu, ei = model.propagate()
    assert fu.shape == (7, 3) and fi.shape == (5, 3) and eu.shape == (7, 6) and widest > 3
    e0 = torch.cat([users.to_dense(), items.to_dense()]).double()
    a = torch.from_numpy(_dense_adjacency(_pairs(), 7, 5))
    want = (e0 + a @ e0 + a @ (a @ e0)) / 3
    np.testing.assert_allclose(torch.cat([fu, fi]).detach().double().numpy(), want[:, :3].numpy(), rtol=1e-5,
                               atol=1e-6)
    assert (want[:, 3:] == 0).all()
    scores = model.scorer()(torch.arange(7))
    np.testing.assert_allclose(scores.double().numpy(), (want[:7] @ want[7:].T).numpy(), rtol=1e-5, atol=1e-6)
