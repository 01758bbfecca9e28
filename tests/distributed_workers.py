"""Workers for tests/test_distributed_*.py: each runs on every rank of a gloo group spawned by `spawn`, builds
the same single table on every rank and checks the sharded table against it on the same data."""
from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pyscall
from pyscall.distributed import WIRE, ShardedEmbedding, ShardedEmbeddingBag, load, load_shards, save
from pyscall.distributed.manifest import reshard

OPTIMIZERS = [None, "sgd", "adagrad", "rowwise_adagrad", "adam"]


def spawn(world: int, fn, *args) -> None:
    """Run fn(rank, world, *args) on `world` gloo processes (1 thread each); a failure on any rank fails."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_entry, args=(world, os.path.join(tmp, "store"), fn, args), nprocs=world, join=True)


def _entry(rank, world, store, fn, args):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def _pair(cls_single, cls_sharded, n, d, seed=0, **kwargs):
    """A single table and a sharded one holding the same rows (the single one's, loaded as a 1-rank checkpoint)."""
    torch.manual_seed(seed)
    widths = torch.randint(0, d + 1, (n,), dtype=torch.int32)
    single = cls_single(n, d, widths=widths, **kwargs)
    sharded = cls_sharded(n, d, widths=widths, **kwargs)
    load_shards(sharded, {0: single.state_dict()}, 1)
    torch.manual_seed(seed + 1)  # the shards drew their own init: every rank's generator starts the data alike
    return single, sharded


def _mine(parts: list, rank: int) -> slice:
    start = sum(p.shape[0] for p in parts[:rank])
    return slice(start, start + parts[rank].shape[0])


def _train_both(single, sharded, rank, world, optimizer, lookup, exact=True):
    """Three steps; `lookup(rank)` -> (single table's output, the sharded one's, the rank's slice of the first).
    Padded lookups copy rows, so they are exact; a pool adds in another order than the single table's kernel."""
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-6, atol=1e-6)
    torch_opts = []
    if optimizer is None:
        torch_opts = [torch.optim.Adagrad(t.parameters(), lr=0.1) for t in (single, sharded.local)]
    for _ in range(3):
        ref, out, part = lookup(rank)
        torch.testing.assert_close(out, ref[part], **tol)
        grad = torch.randn_like(ref)
        (ref * grad).sum().backward()
        (out * grad[part]).sum().backward()
        for opt in torch_opts:
            opt.step()
            opt.zero_grad()
    torch.testing.assert_close(sharded.to_dense(), single.to_dense(), **tol)
    assert sharded.step == single.step


def lookups(rank, world, optimizers, pooled_configs):
    """Padded lookups with each optimizer, then pooled ones with each (optimizer, mode)."""
    for optimizer in optimizers:
        _padded(rank, world, optimizer)
    for optimizer, mode in pooled_configs:
        _pooled(rank, world, optimizer, mode)


def _padded(rank, world, optimizer):
    kwargs = dict(optimizer=optimizer, lr=0.1) if optimizer else {}
    single, sharded = _pair(pyscall.Embedding, ShardedEmbedding, 23, 6, padding_idx=3, **kwargs)

    def lookup(r):
        batches = [torch.randint(0, 23, (4 + k, 3)) for k in range(world)]
        batches[0][0, 0] = 3  # the padding row
        part = _mine(batches, r)
        return single(torch.cat(batches)), sharded(batches[r]), part

    _train_both(single, sharded, rank, world, optimizer, lookup)
    assert float(sharded.to_dense()[3].abs().sum()) == 0.0
    # Bytes this rank sends in a lookup, against the minimum: its remote ids (8 B) and the rows it serves to
    # other ranks at their real widths (4 B an element).
    ids = torch.randint(0, 23, (64,))
    widths = sharded.widths
    served = [None] * world
    dist.all_gather_object(served, ids)
    minimum = 8 * int((ids % world != rank).sum()) + 4 * sum(
        int(widths[other[(other % world == rank)]].sum()) for r, other in enumerate(served) if r != rank)
    WIRE.reset()
    with torch.no_grad():
        sharded(ids)
    assert minimum <= WIRE.sent <= 1.5 * minimum, (WIRE.sent, minimum)


def _pooled(rank, world, optimizer, mode):
    kwargs = dict(optimizer=optimizer, lr=0.1) if optimizer else {}
    single, sharded = _pair(pyscall.EmbeddingBag, ShardedEmbeddingBag, 19, 5, mode=mode, padding_idx=2, **kwargs)

    def lookup(r):
        ids = [torch.randint(0, 19, (7 + k,)) for k in range(world)]
        ids[0][1] = 2
        offsets = [torch.tensor([0, 2, 2, 5]) for _ in range(world)]  # an empty bag too
        weights = [torch.rand(i.shape) for i in ids] if mode == "sum" else [None] * world
        bounds, start = [], 0
        for i, o in zip(ids, offsets):
            bounds.append(o + start)
            start += i.numel()
        ref = single(torch.cat(ids), torch.cat(bounds), None if weights[0] is None else torch.cat(weights))
        out = sharded(ids[r], offsets[r], weights[r])
        return ref, out, slice(4 * r, 4 * r + 4)

    _train_both(single, sharded, rank, world, optimizer, lookup, exact=False)


def global_state(sharded) -> dict:
    """The sharded table's state as one table's state dict (every shard gathered and resharded onto 1 rank)."""
    shards = [None] * sharded.world_size
    dist.all_gather_object(shards, sharded.local.state_dict(), group=sharded.group)
    return reshard(dict(enumerate(shards)), sharded.world_size, sharded.num_embeddings, 0, 1)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def _raises_everywhere(kind, call, sharded, match: str = ""):
    """`call()` raises `kind` on this rank (so on every rank: each runs this) and changes nothing."""
    before, stats = global_state(sharded), sharded.memory_stats()["ranks"]
    try:
        call()
    except kind as e:
        assert match in str(e), str(e)
    else:
        raise AssertionError(f"{kind.__name__} not raised")
    assert_same_state(global_state(sharded), before)
    assert sharded.memory_stats()["ranks"] == stats


def layout(rank, world):
    """Layout calls with global ids act on their owners as a single table's do; bad input and a budget one rank
    would exceed raise on every rank and change nothing."""
    torch.manual_seed(0)
    n, d = 17, 8
    widths = torch.randint(0, d + 1, (n,), dtype=torch.int32)
    # init_std=0: appended rows start at zero on both sides (each side would draw its own random init otherwise).
    single = pyscall.Embedding(n, d, widths=widths, optimizer="adam", lr=0.1, init_std=0.0)
    sd = single.state_dict()
    sd["values"] = torch.randn_like(sd["values"])
    single.load_state_dict(sd)
    sharded = ShardedEmbedding(n, d, widths=widths, optimizer="adam", lr=0.1, init_std=0.0)
    load_shards(sharded, {0: single.state_dict()}, 1)
    assert_same_state(global_state(sharded), single.state_dict())
    torch.manual_seed(1)
    ids = torch.tensor([0, 5, 5, 16, 3, 8])
    new = torch.tensor([3, 8, 1, 0, 7, 8])
    for t in (single, sharded):
        t.resize(ids, new)
    assert_same_state(global_state(sharded), single.state_dict())
    grow = torch.tensor([2, 0, 5, 8, 1], dtype=torch.int32)
    assert torch.equal(sharded.append(grow), single.append(grow))
    assert sharded.append(4) == single.append(4) == n + 5
    assert torch.equal(sharded.widths, single.widths)
    torch.manual_seed(2)  # appends drew each rank's own init: the ranks' generators start alike again
    batch = torch.randint(0, n + 6, (9,))  # train the new rows too
    sharded(batch[rank::world]).sum().backward()
    single(torch.cat([batch[r::world] for r in range(world)])).sum().backward()
    new_widths = torch.randint(0, d + 1, (n + 6,), dtype=torch.int32)
    for t in (single, sharded):
        t.set_widths(new_widths)
        t.release(torch.tensor([1, 20]))
        t.resize(torch.tensor([4]), 8)
        t.compact()
    assert_same_state(global_state(sharded), single.state_dict())
    stats = sharded.memory_stats()
    assert stats["total_width"] == single.memory_stats()["total_width"]
    assert stats["num_rows"] == n + 6 and stats["rank"] == sharded.local.memory_stats()
    assert stats["used_bytes"] == sum(s["used_bytes"] for s in stats["ranks"])

    # Bad input, on every rank alike or on one rank only: every rank raises, nothing changes.
    _raises_everywhere(IndexError, lambda: sharded.resize(torch.tensor([0, n + 6]), 2), sharded)
    _raises_everywhere(ValueError, lambda: sharded.resize(torch.tensor([0, 1]), 9), sharded)
    _raises_everywhere(ValueError, lambda: sharded.set_widths(torch.tensor([rank] * (n + 6))), sharded,
                       "different arguments")
    _raises_everywhere(IndexError, lambda: sharded(torch.tensor([n + 6 if rank == world - 1 else 0])), sharded,
                       f"rank {world - 1}")
    _raises_everywhere(TypeError, lambda: sharded(torch.tensor([0.5] if rank == 0 else [1])), sharded, "rank 0")
    # A budget that the last rank would exceed: its rows fill its budget, then every row grows.
    last = world - 1
    tight = sharded.local.memory_stats()["used_bytes"] + sharded.local.memory_stats()["row_metadata_bytes"]
    sharded.set_budget(tight if rank == last else None)
    _raises_everywhere(pyscall.BudgetExceededError, lambda: sharded.set_widths(d), sharded, f"rank {last}")
    _raises_everywhere(pyscall.BudgetExceededError, lambda: sharded.append(torch.full((world,), 3)), sharded,
                       f"rank {last}")
    rows_of_last = torch.arange(last, n + 6, world)
    _raises_everywhere(pyscall.BudgetExceededError, lambda: sharded.resize(rows_of_last, 8), sharded, f"rank {last}")
    _raises_everywhere(pyscall.BudgetExceededError, lambda: sharded.set_budget(tight // 2 if rank == last else None),
                       sharded, f"rank {last}")
    # Shrinking one row of the last rank frees room: growing another row by as much fits exactly.
    w_last = sharded.widths[rows_of_last]
    a, b = int(torch.argmax(w_last)), int(torch.argmin(w_last))
    sharded.resize(rows_of_last[[a, b]], torch.stack([w_last[a] - 1, w_last[b] + 1]))
    # A table that one rank's budget cannot hold is not built, on any rank.
    try:
        ShardedEmbedding(n, d, widths=widths, optimizer="adam", budget_bytes=64 if rank == last else None)
    except pyscall.BudgetExceededError as e:
        assert f"rank {last}" in str(e)
    else:
        raise AssertionError("a table over one rank's budget was built")
    # Lookups still work after every error: no rank was left in a collective.
    out = sharded(torch.arange(rank, n + 6, world))
    assert out.shape == (len(range(rank, n + 6, world)), d)


def save_trained(rank, world, directory):
    """Train a sharded table a few steps (with its single-table twin), save it, and save the twin as reference."""
    single, sharded = _pair(pyscall.Embedding, ShardedEmbedding, 29, 7, optimizer="adam", lr=0.05)
    for _ in range(2):
        batches = [torch.randint(0, 29, (6,)) for _ in range(world)]
        grads = [torch.randn(6, 7) for _ in range(world)]
        (sharded(batches[rank]) * grads[rank]).sum().backward()
        (single(torch.cat(batches)) * torch.cat(grads)).sum().backward()
    save(sharded, directory)
    fresh = ShardedEmbedding(29, 7, optimizer="adam", lr=0.05)
    load(fresh, directory)  # on as many ranks as it was saved from: each reads its own shard
    assert_same_state(global_state(fresh), single.state_dict())
    if rank == 0:
        torch.save(single.state_dict(), os.path.join(directory, "reference.pt"))


def load_saved(rank, world, directory):
    """Load the 2-rank checkpoint on `world` ranks and, on rank 0 alone, on 1 rank: same rows, widths, state."""
    reference = torch.load(os.path.join(directory, "reference.pt"), weights_only=True)
    n = reference["widths"].numel()
    sharded = ShardedEmbedding(n, 7, optimizer="adam", lr=0.05)
    load(sharded, directory)
    assert_same_state(global_state(sharded), reference)
    solo_group = dist.new_group([0])
    if rank == 0:
        solo = ShardedEmbedding(n, 7, optimizer="adam", lr=0.05, process_group=solo_group)
        load(solo, directory)
        assert_same_state(solo.local.state_dict(), reference)
    # The loaded table trains on as the single table does.
    single = pyscall.Embedding(n, 7, optimizer="adam", lr=0.05)
    single.load_state_dict(reference)
    torch.manual_seed(5)
    batches = [torch.randint(0, n, (6,)) for _ in range(world)]
    sharded(batches[rank]).sum().backward()
    single(torch.cat(batches)).sum().backward()
    assert_same_state(global_state(sharded), single.state_dict())
    # The module's own state dict (this rank's shard) round-trips on the same ranks.
    saved = {k: v.clone() for k, v in sharded.state_dict().items()}
    sharded(batches[rank]).sum().backward()
    sharded.load_state_dict(saved)
    assert_same_state(global_state(sharded), single.state_dict())
    # A checkpoint of another row count is refused on every rank unless match_rows=False.
    other = ShardedEmbedding(n + 1, 7, optimizer="adam", lr=0.05)
    try:
        load(other, directory)
    except ValueError as e:
        assert "match_rows=False" in str(e)
    else:
        raise AssertionError("a checkpoint of another row count loaded")
    load(other, directory, match_rows=False)
    assert other.num_embeddings == n
