"""The routing rule and resharding as plain functions (no processes): every global id has one owner and one
local row, appends spread round-robin, and resharding a table over any rank counts gives back its rows."""
import pytest
import torch

import pyscall
from pyscall.distributed import routing
from pyscall.distributed.manifest import reshard


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_every_id_has_one_owner_and_local_rows_stay_in_id_order(world):
    n = 23
    seen = torch.zeros(n, dtype=torch.int64)
    for rank in range(world):
        ids = routing.global_ids(n, rank, world)
        assert ids.numel() == routing.local_count(n, rank, world)
        assert torch.equal(routing.owner(ids, world), torch.full_like(ids, rank))
        assert torch.equal(routing.local_row(ids, world), torch.arange(ids.numel()))
        seen[ids] += 1
    assert torch.equal(seen, torch.ones(n, dtype=torch.int64))


def test_appended_ids_spread_over_the_ranks():
    new = torch.arange(1000, 1000 + 37)  # ids arriving at the end of the vocabulary
    counts = torch.bincount(routing.owner(new, 8), minlength=8)
    assert int(counts.max()) - int(counts.min()) <= 1


@pytest.mark.parametrize("optimizer", ["adam", "rowwise_adagrad"])
def test_resharding_through_any_rank_counts_gives_the_table_back(optimizer):
    torch.manual_seed(0)
    n, d = 31, 9
    table = pyscall.Embedding(n, d, widths=torch.randint(0, d + 1, (n,), dtype=torch.int32), optimizer=optimizer,
                              lr=0.1)
    table(torch.randint(0, n, (40,))).pow(2).sum().backward()  # optimizer state that is not zero
    state = table.state_dict()
    shards, world = {0: state}, 1
    for new_world in (3, 5, 2, 1):
        shards = {r: reshard(shards, world, n, r, new_world) for r in range(new_world)}
        world = new_world
        assert sum(s["widths"].numel() for s in shards.values()) == n
    for key, value in state.items():
        assert torch.equal(shards[0][key], value), key
    restored = pyscall.Embedding(n, d, optimizer=optimizer, lr=0.1)
    restored.load_state_dict(shards[0])
    assert torch.equal(restored.to_dense(), table.to_dense())
