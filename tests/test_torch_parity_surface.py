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
