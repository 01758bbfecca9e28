"""The library's error messages say what was wrong: the id and the valid range, the operation the user called."""
import re

import pytest
import torch

import pyscall


@pytest.mark.parametrize("bad", [10, 57, -1])
@pytest.mark.parametrize("cls", [pyscall.Embedding, pyscall.EmbeddingBag])
def test_an_id_out_of_range_is_named_with_the_valid_range(cls, bad):
    table = cls(10, 4, widths=torch.arange(10, dtype=torch.int32) % 5)
    with pytest.raises(IndexError, match=rf"index out of range in self: id {bad}, valid ids are 0 to 9$"):
        table(torch.tensor([[3, bad]]) if cls is pyscall.EmbeddingBag else torch.tensor([3, bad]))


def test_an_id_into_an_empty_table_says_it_has_no_rows():
    with pytest.raises(IndexError, match="id 0, the table has no rows"):
        pyscall.Embedding(0, 4)(torch.tensor([0]))


def test_the_triton_id_check_names_the_id_and_the_range():
    _common = pytest.importorskip("pyscall.backends.triton._common")
    with pytest.raises(IndexError, match=r"id -3, valid ids are 0 to 4$"):
        _common.check_ids(torch.tensor([0, -3, 9]), torch.device("cpu"), 5)  # the lowest first, as reported
    with pytest.raises(IndexError, match=r"id 9, valid ids are 0 to 4$"):
        _common.check_ids(torch.tensor([0, 9, 2]), torch.device("cpu"), 5)


@pytest.mark.parametrize("widths", [None, torch.full((1000,), 8, dtype=torch.int32)])
def test_a_budget_too_small_at_construction_names_the_construction(widths):
    need = 1000 * ((64 if widths is None else 8) * 12 + 16)  # Adam: weight + 2 moments, 16 bytes of metadata
    with pytest.raises(pyscall.BudgetExceededError) as err:
        pyscall.Embedding(1000, 64, widths=widths, optimizer="adam", budget_bytes=need - 1)
    message = str(err.value)
    assert message.startswith(f"a new table of 1000 rows needs {need} bytes"), message
    assert "append" not in message and re.search(rf"budget_bytes is {need - 1}$", message)
    pyscall.Embedding(1000, 64, widths=widths, optimizer="adam", budget_bytes=need)  # exactly enough fits


def test_append_over_the_budget_still_names_append():
    table = pyscall.Embedding(10, 8, optimizer="sgd", budget_bytes=10 * (8 * 4 + 16))
    with pytest.raises(pyscall.BudgetExceededError, match="^append needs"):
        table.append(torch.tensor([1], dtype=torch.int32))
