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


# -- exceptions: instances of pyscall's documented type and of torch's ----------------------------------
def _raised(call):
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the type is what is compared
        return e
    raise AssertionError("no exception")


def _bags(cls, **kwargs):
    torch.manual_seed(3)
    return cls(6, 3, mode="sum", **kwargs)


@pytest.mark.parametrize("offsets", [torch.tensor([1, 2]), torch.tensor([0, 5]), torch.tensor([0, 4])])
@pytest.mark.parametrize("include_last_offset", [False, True])
def test_bad_offsets_raise_what_torch_and_pyscall_catch(offsets, include_last_offset):
    ids = torch.randint(0, 6, (3,))
    ours = _bags(pyscall.EmbeddingBag, include_last_offset=include_last_offset)
    ref = _bags(nn.EmbeddingBag, include_last_offset=include_last_offset)
    expected = type(_raised(lambda: ref(ids, offsets)))
    assert expected is RuntimeError
    err = _raised(lambda: ours(ids, offsets))
    assert isinstance(err, expected) and isinstance(err, ValueError) and isinstance(err, pyscall.OffsetsError)
    with pytest.raises(RuntimeError):
        ours(ids, offsets)
    with pytest.raises(ValueError):
        ours(ids, offsets)


def test_offsets_first_not_zero_message_names_offsets0():
    bag = _bags(pyscall.EmbeddingBag)
    with pytest.raises(RuntimeError, match=r"offsets\[0\]"):
        bag(torch.tensor([1, 2, 3]), torch.tensor([1, 2]))


@pytest.mark.parametrize("psw_dtype", [torch.float64, torch.float16])
def test_per_sample_weights_dtype_raises_what_torch_and_pyscall_catch(psw_dtype):
    ids, offsets = torch.randint(0, 6, (5,)), torch.tensor([0, 2])
    psw = torch.rand(5, dtype=psw_dtype)
    ref_err = _raised(lambda: _bags(nn.EmbeddingBag)(ids, offsets, per_sample_weights=psw))
    assert type(ref_err) is RuntimeError and "have the same type as" in str(ref_err)
    bag = _bags(pyscall.EmbeddingBag)
    with pytest.raises(RuntimeError, match="have the same type as"):
        bag(ids, offsets, per_sample_weights=psw)
    with pytest.raises(TypeError):
        bag(ids, offsets, per_sample_weights=psw)


def test_per_sample_weights_shape_message_as_torch():
    ids, offsets, psw = torch.randint(0, 6, (5,)), torch.tensor([0, 2]), torch.rand(4)
    for cls in (nn.EmbeddingBag, pyscall.EmbeddingBag):
        with pytest.raises(ValueError, match="same shape as the input"):
            _bags(cls)(ids, offsets, per_sample_weights=psw)


@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
def test_float_indices_and_offsets_raise_what_torch_and_pyscall_catch(cls):
    ids = torch.randint(0, 6, (4,))
    ours, ref = getattr(pyscall, cls)(6, 3), getattr(nn, cls)(6, 3)
    args = (ids.float(),) if cls == "Embedding" else (ids.float(), torch.tensor([0, 2]))
    assert type(_raised(lambda: ref(*args))) is RuntimeError
    for expected in (RuntimeError, TypeError):
        with pytest.raises(expected, match="scalar types: Long, Int"):
            ours(*args)
    if cls == "EmbeddingBag":
        assert type(_raised(lambda: ref(ids, torch.tensor([0.0, 2.0])))) is RuntimeError
        for expected in (RuntimeError, TypeError):
            with pytest.raises(expected, match="offsets"):
                ours(ids, torch.tensor([0.0, 2.0]))


@pytest.mark.parametrize("cls", ["Embedding", "EmbeddingBag"])
@pytest.mark.parametrize("padding_idx", [6, 10, -7])
def test_padding_idx_out_of_range_raises_what_torch_and_pyscall_catch(cls, padding_idx):
    ref_err = _raised(lambda: getattr(nn, cls)(6, 3, padding_idx=padding_idx))
    assert type(ref_err) is AssertionError
    for expected in (AssertionError, ValueError, pyscall.PaddingIdxError):
        with pytest.raises(expected, match="adding_idx must be within num_embeddings"):
            getattr(pyscall, cls)(6, 3, padding_idx=padding_idx)
    with pytest.raises(AssertionError):
        getattr(pyscall, cls).from_pretrained(torch.rand(6, 3), padding_idx=padding_idx)


def test_a_bad_call_changes_nothing():
    # The new types are raised where the old ones were: before anything is read or written.
    bag = _bags(pyscall.EmbeddingBag)
    before = bag.to_dense().clone()
    for call in (lambda: bag(torch.tensor([1, 2]), torch.tensor([1])),
                 lambda: bag(torch.tensor([1, 2]), torch.tensor([0]), per_sample_weights=torch.rand(2).double())):
        with pytest.raises(RuntimeError):
            call()
    assert torch.equal(bag.to_dense(), before)
