"""Ragged widths: outputs, gradients and fused optimizers against a float64 masked dense reference."""
import pytest
import torch
import torch.nn.functional as F

import pyscall
from pyscall import host

N, D = 60, 9


def _widths(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(0, D + 1, (N,), generator=g, dtype=torch.int32)
    w[:4] = torch.tensor([0, 1, 7, D], dtype=torch.int32)  # the edge widths, always present
    return w


def _mask(widths):
    return torch.arange(D)[None, :] < widths[:, None].to(torch.int64)


def _dense_grad(table):
    """Drop-in flat gradient mapped to [n, d_max] (zeros past widths)."""
    a = table._arena
    index = a.offsets[:, None] + torch.arange(D)[None, :]
    mask = _mask(a.widths)
    return torch.where(mask, table.weight.grad[index.clamp_max(table.weight.numel() - 1)], 0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_padded_lookup_and_grad_match_masked_reference(dtype):
    torch.manual_seed(0)
    emb = pyscall.Embedding(N, D, widths=_widths(), dtype=dtype)
    ids = torch.randint(0, N, (5, 7))
    ids[0, :4] = torch.tensor([0, 1, 2, 3])
    ids[1, 0] = ids[1, 1]
    dense = emb.to_dense().double().requires_grad_(True)
    assert torch.all(dense.detach()[~_mask(emb.widths)] == 0)
    out = emb(ids)
    ref = dense[ids]
    torch.testing.assert_close(out.double(), ref.detach(), rtol=0, atol=0)
    grad = torch.randn(out.shape, dtype=torch.float64)
    (out * grad.to(dtype)).sum().backward()
    (ref * grad).sum().backward()
    masked = torch.where(_mask(emb.widths), dense.grad, 0.0)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(_dense_grad(emb).double(), masked, rtol=tol, atol=tol)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_pooled_lookup_and_grad_match_masked_reference(mode):
    torch.manual_seed(1)
    bag = pyscall.EmbeddingBag(N, D, mode=mode, widths=_widths(1), dtype=torch.float64)
    ids = torch.randint(0, N, (30,))
    ids[5:8] = 2
    offsets = torch.tensor([0, 4, 4, 11, 20, 29])
    psw = torch.randn(30, dtype=torch.float64) if mode == "sum" else None
    dense = bag.to_dense().requires_grad_(True)
    out = bag(ids, offsets, per_sample_weights=psw)
    ref = F.embedding_bag(ids, dense, offsets, mode=mode, per_sample_weights=psw)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-12, atol=1e-12)
    grad = torch.randn(out.shape, dtype=torch.float64)
    (out * grad).sum().backward()
    (ref * grad).sum().backward()
    torch.testing.assert_close(_dense_grad(bag), torch.where(_mask(bag.widths), dense.grad, 0.0),
                               rtol=1e-12, atol=1e-12)


def _rowwise_adagrad_step(params, state, grad, lr, eps, wd, widths):
    """Row-wise Adagrad written from its definition (torch has none)."""
    g = grad + wd * params
    mask = _mask(widths).double()
    sq = (g * g * mask).sum(1) / widths.clamp_min(1).double()
    state += torch.where(widths > 0, sq, torch.zeros_like(sq))
    params -= lr * g * mask / (state.sqrt()[:, None] + eps)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rowwise_adagrad", "adam"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_optimizers_match_torch_on_touched_rows(optimizer, weight_decay):
    torch.manual_seed(3)
    widths = _widths(3)
    kwargs = dict(lr=0.05, weight_decay=weight_decay)
    emb = pyscall.Embedding(N, D, widths=widths, optimizer=optimizer, dtype=torch.float64, **kwargs)
    touched = torch.tensor([0, 1, 2, 3, 10, 11, 40])
    # the same rows every step (so lazy and dense Adam agree), with duplicates in each batch
    batch = torch.cat([touched, touched[[2, 2, 5]]])
    ref = emb.to_dense()[touched].clone().requires_grad_(True)
    mask = _mask(widths[touched]).double()
    if optimizer == "rowwise_adagrad":
        ref_state = torch.zeros(len(touched), dtype=torch.float64)
    else:
        cls = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}[optimizer]
        extra = {"eps": 1e-10} if optimizer == "adagrad" else {}
        ref_opt = cls([ref], **kwargs, **extra)
    position = {int(r): k for k, r in enumerate(touched)}
    local = torch.tensor([position[int(r)] for r in batch])
    for step in range(4):
        target = torch.randn(len(batch), D, dtype=torch.float64)
        out = emb(batch)
        ((out - target) ** 2).sum().backward()
        ref_out = (ref * mask)[local]
        loss = ((ref_out - target) ** 2).sum()
        if optimizer == "rowwise_adagrad":
            grad, = torch.autograd.grad(loss, ref)
            with torch.no_grad():
                _rowwise_adagrad_step(ref, ref_state, grad * mask, 0.05, 1e-8, weight_decay, widths[touched])
        else:
            ref_opt.zero_grad()
            loss.backward()
            ref.grad *= mask
            ref_opt.step()
        torch.testing.assert_close(emb.to_dense()[touched], ref.detach() * mask, rtol=1e-5, atol=1e-8)
    assert emb.weight.grad is None and emb.step == 4


@pytest.mark.parametrize("mode,weighted", [("sum", False), ("sum", True), ("mean", False), ("max", False)])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("padding_idx", [None, 11])
def test_fused_bag_optimizers_match_torch_on_touched_rows(mode, weighted, optimizer, padding_idx):
    # EmbeddingBag's fused update over several steps, with duplicates, an empty bag and the padding row in the
    # bags, against torch.optim on the masked dense reference of the touched rows.
    torch.manual_seed(8)
    widths = _widths(5)
    bag = pyscall.EmbeddingBag(N, D, mode=mode, padding_idx=padding_idx, widths=widths, optimizer=optimizer,
                               lr=0.05, dtype=torch.float64)
    touched = torch.tensor([0, 1, 2, 3, 11, 30, 41])
    ref = bag.to_dense()[touched].clone().requires_grad_(True)
    mask = _mask(widths[touched]).double()
    ref_opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]([ref], lr=0.05)
    local_of = {int(r): k for k, r in enumerate(touched)}
    ids = touched[[0, 4, 4, 2, 5, 6, 1, 3, 4, 6, 6, 0]]
    offsets = torch.tensor([0, 3, 3, 7])
    local_ids = torch.tensor([local_of[int(r)] for r in ids])
    local_pad = None if padding_idx is None else local_of[padding_idx]
    for step in range(3):
        psw = torch.randn(len(ids), dtype=torch.float64) if weighted else None
        target = torch.randn(len(offsets), D, dtype=torch.float64)
        ((bag(ids, offsets, per_sample_weights=psw) - target) ** 2).sum().backward()
        ref_out = F.embedding_bag(local_ids, ref * mask, offsets, mode=mode, per_sample_weights=psw,
                                  padding_idx=local_pad)
        ref_opt.zero_grad()
        ((ref_out - target) ** 2).sum().backward()
        ref_opt.step()
        torch.testing.assert_close(bag.to_dense()[touched], ref.detach() * mask, rtol=1e-5, atol=1e-8)
    assert bag.weight.grad is None and bag.step == 3


def test_fused_update_leaves_untouched_rows_alone():
    torch.manual_seed(4)
    emb = pyscall.Embedding(N, D, widths=_widths(4), optimizer="adam", lr=0.1)
    before = emb.to_dense()
    ids = torch.tensor([5, 6, 6])
    emb(ids).sum().backward()
    after = emb.to_dense()
    changed = (after != before).any(1)
    assert set(changed.nonzero().flatten().tolist()) <= {5, 6}
    assert torch.all(after[~_mask(emb.widths)] == 0)


def test_a_table_leaves_and_regains_the_uniform_layout_with_the_same_results():
    """Built without widths, a table is read without its metadata (uniform_width); a resize takes it
    to the metadata path and set_widths back, and forward and the fused update stay exact throughout."""
    torch.manual_seed(4)
    emb = pyscall.Embedding(N, D, optimizer="sgd", lr=0.5)
    ids = torch.randint(0, N, (40,))
    ids[:2] = ids[2]
    for change, uniform in ((lambda: None, D), (lambda: emb.resize([3, 7], [4, 0]), 0),
                            (lambda: emb.set_widths(torch.full((N,), 5)), 5)):
        change()
        assert emb._arena.uniform_width == uniform
        dense = emb.to_dense().double()
        out = emb(ids)
        torch.testing.assert_close(out.double(), dense[ids], rtol=0, atol=0)
        grad = torch.randn(out.shape)
        out.backward(grad)
        step = torch.zeros(N, D, dtype=torch.float64).index_add_(0, ids, grad.double())
        expected = dense - 0.5 * torch.where(_mask(emb.widths), step, 0.0)
        torch.testing.assert_close(emb.to_dense().double(), expected, rtol=1e-6, atol=1e-6)


def test_bad_input_raises_and_changes_nothing():
    torch.manual_seed(5)
    emb = pyscall.Embedding(N, D, widths=_widths(5), optimizer="adam")
    bag = pyscall.EmbeddingBag(N, D, mode="sum", widths=_widths(5))
    before, before_bag = emb.to_dense(), bag.to_dense()
    with pytest.raises(IndexError, match="index out of range"):
        emb(torch.tensor([0, N]))
    with pytest.raises(IndexError, match="index out of range"):
        emb(torch.tensor([-1]))
    with pytest.raises(TypeError, match="Long, Int"):
        emb(torch.tensor([0.0, 1.0]))
    with pytest.raises(IndexError):
        bag(torch.tensor([0, 1, N + 3]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="per_sample_weights"):
        bag(torch.tensor([0, 1, 2]), torch.tensor([0, 2]), per_sample_weights=torch.ones(2))
    with pytest.raises(ValueError, match="offsets"):
        bag(torch.tensor([0, 1, 2]), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="offsets"):
        bag(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"offsets must be <= the number of indices \(3\), got 5"):
        bag(torch.tensor([0, 1, 2]), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"offsets must be <= the number of indices \(3\), got 4"):
        pyscall.EmbeddingBag(N, D, include_last_offset=True)(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="non-decreasing"):
        bag(torch.tensor([0, 1, 2]), torch.tensor([0, 2, 1]))
    with pytest.raises(NotImplementedError, match="mode='sum'"):
        pyscall.EmbeddingBag(N, D, mode="mean")(torch.tensor([0]), torch.tensor([0]),
                                                 per_sample_weights=torch.ones(1))
    assert torch.equal(emb.to_dense(), before) and torch.equal(bag.to_dense(), before_bag)
    assert emb.step == 0


def test_bag_offsets_check_reads_strided_offsets_and_refuses_other_dtypes():
    every_other = torch.tensor([0, 9, 2, 9, 3])[::2]  # 0, 2, 3 as a strided view
    assert host.bag_end(every_other, 4) == 3
    with pytest.raises(ValueError, match=r"offsets\[0\] must be 0"):
        host.bag_end(torch.tensor([], dtype=torch.int64), 4)
    with pytest.raises(TypeError, match="int64"):
        host.bag_end(torch.tensor([0, 2], dtype=torch.int32), 4)
