"""The parts of torch.nn.Embedding / EmbeddingBag's surface beyond the numbers (issue 25's "remaining surface"):
embedding_dim=0, integer from_pretrained and exceptions that torch's callers can catch. Each is checked
against torch itself on random data."""
import pytest
import torch
from torch import nn

import pyscall


# -- embedding_dim=0 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7,), (3, 4), (0,)])
@pytest.mark.parametrize("optimizer", [None, "sgd", "adam"])
def test_embedding_dim_zero_matches_torch(shape, optimizer):
    torch.manual_seed(0)
    ids = torch.randint(0, 6, shape)
    ours = pyscall.Embedding(6, 0, optimizer=optimizer)
    ref = nn.Embedding(6, 0)
    out, out_ref = ours(ids), ref(ids)
    assert out.shape == out_ref.shape == (*shape, 0)
    assert out.dtype == out_ref.dtype
    out.sum().backward()  # nothing to train, but backward runs as torch's does
    assert ours.embedding_dim == 0 and ours.to_dense().shape == ref.weight.shape
    if optimizer is None:
        assert ours.weight.grad is not None and ours.weight.grad.numel() == 0


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_dim_zero_pools_to_empty_rows(mode):
    # torch's own EmbeddingBag(n, 0) fails inside its kernel; pyscall gives each bag its empty row.
    bag = pyscall.EmbeddingBag(6, 0, mode=mode)
    out = bag(torch.randint(0, 6, (5,)), torch.tensor([0, 2]))
    assert out.shape == (2, 0)


def test_embedding_dim_negative_still_refused():
    with pytest.raises(ValueError, match="embedding_dim"):
        pyscall.Embedding(4, -1)


# -- integer from_pretrained --------------------------------------------------------------------------
_INT_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]


@pytest.mark.parametrize("dtype", _INT_DTYPES)
@pytest.mark.parametrize("default", [torch.float32, torch.float64])
def test_embedding_from_pretrained_integer_rows_match_torch(dtype, default):
    torch.manual_seed(1)
    rows = torch.randint(0, 100, (9, 5)).to(dtype)
    ids = torch.randint(0, 9, (4, 3))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        ours = pyscall.Embedding.from_pretrained(rows)
    finally:
        torch.set_default_dtype(previous)
    ref = nn.Embedding.from_pretrained(rows)  # torch keeps the integer dtype; the values are what must agree
    assert ours.to_dense().dtype == default and not ours.weight.requires_grad
    torch.testing.assert_close(ours.to_dense(), ref.weight.to(default), rtol=0, atol=0)
    torch.testing.assert_close(ours(ids), ref(ids).to(default), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_embedding_bag_from_pretrained_integer_rows(dtype):
    torch.manual_seed(2)
    rows = torch.randint(-50, 50, (8, 4)).to(dtype)
    ids, offsets = torch.randint(0, 8, (10,)), torch.tensor([0, 3, 3, 7])
    ours = pyscall.EmbeddingBag.from_pretrained(rows, mode="sum")
    # torch's EmbeddingBag refuses integer rows; its float copy gives the expected sums.
    ref = nn.EmbeddingBag.from_pretrained(rows.to(torch.get_default_dtype()), mode="sum")
    assert ours.to_dense().dtype == torch.get_default_dtype()
    torch.testing.assert_close(ours(ids, offsets), ref(ids, offsets), rtol=0, atol=0)


def test_from_pretrained_integer_rows_dtype_keyword_and_training():
    rows = torch.arange(12).view(4, 3)
    ours = pyscall.Embedding.from_pretrained(rows, dtype=torch.float64, freeze=False, optimizer="sgd", lr=1.0)
    assert ours.to_dense().dtype == torch.float64
    torch.testing.assert_close(ours.to_dense(), rows.double(), rtol=0, atol=0)
    ours(torch.tensor([1])).sum().backward()  # a float table: the fused step trains it
    torch.testing.assert_close(ours.to_dense()[1], rows[1].double() - 1)
