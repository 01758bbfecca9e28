"""With every row embedding_dim wide, pyscall's modules must match torch's, forward and backward."""
import pytest
import torch
from torch import nn

import pyscall


def _pair_embedding(n=50, d=8, padding_idx=None, seed=0):
    torch.manual_seed(seed)
    ours = pyscall.Embedding(n, d, padding_idx=padding_idx)
    ref = nn.Embedding(n, d, padding_idx=padding_idx)
    with torch.no_grad():
        ref.weight.copy_(ours.to_dense())
    return ours, ref


def _flat_grad_as_dense(table):
    """The drop-in gradient of the flat buffer, viewed as [n, d] (every row d wide and packed)."""
    n, d = table.num_embeddings, table.embedding_dim
    offsets = table._arena.offsets
    index = offsets[:, None] + torch.arange(d)[None, :]
    return table.weight.grad[index]


@pytest.mark.parametrize("shape", [(17,), (4, 5), (0,)])
@pytest.mark.parametrize("padding_idx", [None, 3, -1])
def test_embedding_forward_backward_matches_torch(shape, padding_idx):
    ours, ref = _pair_embedding(padding_idx=padding_idx)
    ids = torch.randint(0, 50, shape)
    if ids.numel():
        ids.view(-1)[0] = 3  # a repeated id and the padding row
        ids.view(-1)[-1] = 3
    out, out_ref = ours(ids), ref(ids)
    assert out.shape == out_ref.shape
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    grad = torch.randn(out.shape)
    (out * grad).sum().backward()
    (out_ref * grad).sum().backward()
    torch.testing.assert_close(_flat_grad_as_dense(ours), ref.weight.grad, rtol=1.3e-6, atol=1e-6)


def test_default_init_matches_torch_distribution():
    torch.manual_seed(0)
    ours = pyscall.Embedding(2000, 64, padding_idx=5).to_dense()
    ref = nn.Embedding(2000, 64, padding_idx=5).weight.detach()
    assert torch.all(ours[5] == 0) and torch.all(ref[5] == 0)
    values = torch.cat([ours[:5], ours[6:]]).flatten()
    assert abs(float(values.mean())) < 0.01 and abs(float(values.std()) - 1.0) < 0.01
    # Same distribution: compare quantiles with torch's own table.
    q = torch.tensor([0.01, 0.1, 0.5, 0.9, 0.99])
    torch.testing.assert_close(torch.quantile(values, q),
                               torch.quantile(torch.cat([ref[:5], ref[6:]]).flatten(), q), atol=0.03, rtol=0)


def _bag_inputs(kind, n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    if kind == "2d":
        return torch.randint(0, n, (6, 4), generator=g), None
    ids = torch.randint(0, n, (23,), generator=g)
    ids[:3] = 7  # duplicates
    offsets = torch.tensor([0, 3, 3, 10, 15, 15, 22])  # empty bags in the middle
    return ids, offsets


@pytest.mark.parametrize("mode,weighted", [("sum", False), ("sum", True), ("mean", False), ("max", False)])
@pytest.mark.parametrize("kind", ["1d", "2d", "1d_last"])
@pytest.mark.parametrize("padding_idx", [None, 7])
def test_embedding_bag_matches_torch(mode, kind, padding_idx, weighted):
    torch.manual_seed(2)
    include_last = kind == "1d_last"
    ours = pyscall.EmbeddingBag(40, 6, mode=mode, include_last_offset=include_last, padding_idx=padding_idx)
    ref = nn.EmbeddingBag(40, 6, mode=mode, include_last_offset=include_last, padding_idx=padding_idx)
    with torch.no_grad():
        ref.weight.copy_(ours.to_dense())
    ids, offsets = _bag_inputs("2d" if kind == "2d" else "1d")
    if include_last:
        offsets = torch.cat([offsets, torch.tensor([ids.numel()])])
    psw = ref_psw = None
    if weighted:
        psw = torch.randn(ids.shape, requires_grad=True)
        ref_psw = psw.detach().clone().requires_grad_(True)
    out = ours(ids, offsets, per_sample_weights=psw)
    out_ref = ref(ids, offsets, per_sample_weights=ref_psw)
    torch.testing.assert_close(out, out_ref, rtol=1.3e-6, atol=1e-6)
    grad = torch.randn(out.shape)
    (out * grad).sum().backward()
    (out_ref * grad).sum().backward()
    torch.testing.assert_close(_flat_grad_as_dense(ours), ref.weight.grad, rtol=1.3e-6, atol=1e-6)
    if weighted:
        torch.testing.assert_close(psw.grad, ref_psw.grad, rtol=1.3e-6, atol=1e-6)


@pytest.mark.parametrize("optimizer,compiled", [(None, False), ("sgd", False), ("sgd", True)])
def test_per_sample_weights_gradient_with_a_frozen_or_fused_table(optimizer, compiled):
    # Only per_sample_weights may need a gradient (a frozen table), or the table trains itself (fused, whose
    # update must come after the weights' gradient reads the rows): the weights' gradient must equal torch's.
    torch.manual_seed(3)
    ours = pyscall.EmbeddingBag(40, 6, mode="sum", optimizer=optimizer)
    ref = nn.EmbeddingBag(40, 6, mode="sum")
    with torch.no_grad():
        ref.weight.copy_(ours.to_dense())
    if optimizer is None:
        ours.weight.requires_grad_(False)
    ids, offsets = _bag_inputs("1d")
    psw = torch.randn(ids.shape, requires_grad=True)
    ref_psw = psw.detach().clone().requires_grad_(True)
    grad = torch.randn(offsets.numel(), 6)
    run = torch.compile(ours, fullgraph=True) if compiled else ours
    (run(ids, offsets, per_sample_weights=psw) * grad).sum().backward()
    (ref(ids, offsets, per_sample_weights=ref_psw) * grad).sum().backward()
    torch.testing.assert_close(psw.grad, ref_psw.grad, rtol=1.3e-6, atol=1e-6)
    assert ours.weight.grad is None


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("optimizer", [None, "adam"])
def test_a_batch_of_only_empty_bags(mode, optimizer):
    # No ids at all: zeros out, and a backward that changes nothing (an empty tensor's data_ptr() is 0, which
    # the kernels once took for "no src_index").
    bag = pyscall.EmbeddingBag(10, 4, mode=mode, optimizer=optimizer)
    before = bag.to_dense()
    out = bag(torch.empty(0, dtype=torch.int64), torch.tensor([0, 0, 0]))
    torch.testing.assert_close(out, torch.zeros(3, 4))
    out.sum().backward()
    torch.testing.assert_close(bag.to_dense(), before, rtol=0, atol=0)
    if optimizer is None:
        assert torch.count_nonzero(bag.weight.grad) == 0


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_include_last_offset_ignores_ids_past_the_last_offset(mode):
    # Every mode reads bags as CSR (torch's max does too; its CPU sum and mean put the rest in the last bag).
    torch.manual_seed(4)
    ours = pyscall.EmbeddingBag(40, 6, mode=mode, include_last_offset=True)
    ref = nn.EmbeddingBag(40, 6, mode=mode, include_last_offset=True)
    with torch.no_grad():
        ref.weight.copy_(ours.to_dense())
    ids, offsets = torch.randint(0, 40, (10,)), torch.tensor([0, 3, 6])
    out = ours(ids, offsets)
    torch.testing.assert_close(out, ref(ids[:6], offsets), rtol=1.3e-6, atol=1e-6)
    out.sum().backward()
    touched = torch.zeros(40, dtype=torch.bool)
    touched[ids[:6]] = True
    assert not _flat_grad_as_dense(ours)[~touched].any()


@pytest.mark.parametrize("mode,weighted", [(None, False), ("sum", True), ("mean", False), ("max", False)])
@pytest.mark.parametrize("ragged", [False, True])
def test_sparse_gradient_equals_the_dense_one(mode, weighted, ragged):
    # sparse=True: weight.grad is a sparse COO tensor whose dense form is the drop-in dense gradient.
    torch.manual_seed(6)
    widths = torch.randint(0, 7, (40,), dtype=torch.int32) if ragged else None
    make = (lambda **kw: pyscall.Embedding(40, 6, padding_idx=7, widths=widths, **kw)) if mode is None else \
        (lambda **kw: pyscall.EmbeddingBag(40, 6, mode=mode, padding_idx=7, widths=widths, **kw))
    dense, sparse = make(), make(sparse=True)
    sparse.load_state_dict(dense.state_dict())
    ids, offsets = _bag_inputs("1d")
    grads = []
    for table in (dense, sparse):
        psw = torch.linspace(-1, 2, ids.numel()).requires_grad_(True) if weighted else None
        out = table(ids) if mode is None else table(ids, offsets, per_sample_weights=psw)
        (out * torch.linspace(-2, 1, out.numel()).view(out.shape)).sum().backward()
        grads.append(psw.grad if weighted else None)
    assert sparse.weight.grad.is_sparse and not dense.weight.grad.is_sparse
    torch.testing.assert_close(sparse.weight.grad.to_dense(), dense.weight.grad, rtol=1e-6, atol=1e-6)
    if weighted:
        torch.testing.assert_close(grads[1], grads[0])


def test_sparse_true_trains_with_torch_sparse_optimizers_like_torch():
    torch.manual_seed(7)
    ours = pyscall.Embedding(50, 8, sparse=True)
    ref = nn.Embedding(50, 8, sparse=True)
    with torch.no_grad():
        ref.weight.copy_(ours.to_dense())
    opts = [torch.optim.SparseAdam(ours.parameters(), lr=0.05), torch.optim.SparseAdam(ref.parameters(), lr=0.05)]
    for step in range(4):
        ids = torch.randint(0, 50, (30,))
        ids[:3] = ids[3]  # duplicates
        for table, opt in zip((ours, ref), opts):
            opt.zero_grad()
            table(ids).pow(2).sum().backward()
            opt.step()
        torch.testing.assert_close(ours.to_dense(), ref.weight.detach(), rtol=1e-5, atol=1e-6)
    ours.resize(torch.tensor([1, 2]), 3, optimizer=opts[0])  # SparseAdam's moments move with the rows
    opts[0].zero_grad()
    ours(torch.arange(5)).sum().backward()
    opts[0].step()


def test_sparse_true_needs_drop_in_mode_and_eager():
    with pytest.raises(ValueError, match="drop-in"):
        pyscall.Embedding(10, 4, sparse=True, optimizer="adam")
    emb = pyscall.Embedding(10, 4, sparse=True)
    with pytest.raises(Exception, match="eager-only"):
        torch.compile(emb, fullgraph=True)(torch.tensor([1, 2]))


def test_unsupported_torch_keywords_raise():
    with pytest.raises(NotImplementedError, match="max_norm"):
        pyscall.Embedding(10, 4, max_norm=1.0)
    with pytest.raises(NotImplementedError, match="scale_grad_by_freq"):
        pyscall.EmbeddingBag(10, 4, scale_grad_by_freq=True)
    pyscall.Embedding(10, 4, sparse=False, max_norm=None)  # torch's defaults are accepted
    with pytest.raises(TypeError, match="unexpected keyword"):
        pyscall.Embedding(10, 4, colour="red")


@pytest.mark.parametrize("freeze", [True, False])
def test_from_pretrained_matches_torch(freeze):
    pretrained = torch.randn(30, 6, dtype=torch.float64)
    ours = pyscall.Embedding.from_pretrained(pretrained, freeze=freeze, padding_idx=2)
    ref = nn.Embedding.from_pretrained(pretrained, freeze=freeze, padding_idx=2)
    bag = pyscall.EmbeddingBag.from_pretrained(pretrained, freeze=freeze, mode="sum")
    ref_bag = nn.EmbeddingBag.from_pretrained(pretrained, freeze=freeze, mode="sum")
    assert ours.weight.dtype == torch.float64 and ours.weight.requires_grad == (not freeze)
    ids, offsets = torch.tensor([2, 5, 2, 29]), torch.tensor([0, 1])
    torch.testing.assert_close(ours(ids), ref(ids), rtol=0, atol=0)  # the padding row keeps its values, as torch's
    torch.testing.assert_close(bag(ids, offsets), ref_bag(ids, offsets))
    if not freeze:
        ours(ids).pow(2).sum().backward()
        ref(ids).pow(2).sum().backward()
        torch.testing.assert_close(_flat_grad_as_dense(ours), ref.weight.grad)


def test_from_pretrained_with_widths_keeps_the_first_values_of_each_row_and_trains_fused():
    pretrained = torch.randn(20, 8)
    widths = torch.randint(0, 9, (20,), dtype=torch.int32)
    ours = pyscall.EmbeddingBag.from_pretrained(pretrained, freeze=False, widths=widths, optimizer="adam",
                                                mode="max")
    torch.testing.assert_close(ours.to_dense(), pretrained * (torch.arange(8) < widths[:, None]), rtol=0, atol=0)
    ours(torch.tensor([1, 2, 3]), torch.tensor([0, 2])).sum().backward()
    assert ours.step == 1
    with pytest.raises(ValueError, match="2-dimensional"):
        pyscall.Embedding.from_pretrained(torch.randn(8))
    with pytest.raises(ValueError, match="needs freeze=False"):
        pyscall.Embedding.from_pretrained(pretrained, optimizer="sgd")
    with pytest.raises(pyscall.BudgetExceededError):
        pyscall.Embedding.from_pretrained(pretrained, budget_bytes=100)


def test_a_torch_checkpoint_loads_into_a_ragged_table_cut_to_its_widths():
    ref = nn.Embedding(20, 8)
    widths = torch.randint(0, 9, (20,), dtype=torch.int32)
    ours = pyscall.Embedding(20, 8, widths=widths, optimizer="adam")
    assert not ours.load_state_dict(ref.state_dict()).missing_keys
    torch.testing.assert_close(ours.to_dense(), ref.weight.detach() * (torch.arange(8) < widths[:, None]),
                               rtol=0, atol=0)
    before = ours.to_dense()
    with pytest.raises(RuntimeError, match=r"expected rows of shape \(20, 8\)"):
        ours.load_state_dict(nn.Embedding(21, 8).state_dict())
    assert torch.equal(ours.to_dense(), before)


def test_reset_parameters_draws_every_stored_value_again_and_keeps_the_layout():
    torch.manual_seed(0)
    widths = torch.randint(0, 65, (2000,), dtype=torch.int32)
    ours = pyscall.Embedding(2000, 64, padding_idx=7, widths=widths, init_std=0.5)
    with torch.no_grad():
        ours.weight.fill_(3.0)
    ours.reset_parameters()
    dense, mask = ours.to_dense(), torch.arange(64) < widths[:, None]
    values = dense[mask & (torch.arange(2000) != 7)[:, None]]
    assert abs(values.mean().item()) < 0.02 and abs(values.std().item() - 0.5) < 0.02  # N(0, init_std) again
    assert not dense[7].any() and not dense[~mask].any()
    assert torch.equal(ours.widths, widths)
