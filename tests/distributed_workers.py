"""Workers for tests/test_distributed_*.py: each runs on every rank of a gloo group spawned by `spawn`, builds
the same single table on every rank and checks the sharded table against it on the same data."""
from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pyscall
from pyscall.distributed import ShardedEmbedding, ShardedEmbeddingBag, load, load_shards, save

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


def padded(rank, world, optimizers):
    for optimizer in optimizers:
        _padded(rank, world, optimizer)


def pooled(rank, world, configs):
    for optimizer, mode in configs:
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
