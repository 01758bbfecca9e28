"""Checkpoints of a sharded table: one file per rank (that rank's `pyscall.Embedding` state dict) plus a
manifest, and resharding: loading onto another number of ranks gives every rank its rows of the global table.

A shard is a single table's own ragged state dict (widths, packed values, per-element and per-row optimizer
state, step), so a single table's state dict is the checkpoint of one rank and loads onto any number of ranks.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from . import routing
from .exchange import change_together, ragged_index, raise_together

__all__ = ["save", "load", "load_shards", "MANIFEST"]

MANIFEST = "manifest.json"
_FORMAT = "pyscall-sharded-1"


def _shard_name(rank: int, world_size: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}.pt"


def save(table, directory: str) -> None:
    """Collective: every rank writes its shard, rank 0 the manifest (written last, so a manifest names only
    shards that exist)."""
    os.makedirs(directory, exist_ok=True)
    shard = table.local.state_dict()
    torch.save(shard, os.path.join(directory, _shard_name(table.rank, table.world_size)))
    stats = [None] * table.world_size
    dist.all_gather_object(stats, {"rows": int(shard["widths"].numel()), "total_width": int(shard["widths"].sum())},
                           group=table.group)
    if table.rank == 0:
        manifest = {"format": _FORMAT, "routing": "modulo", "world_size": table.world_size,
                    "num_embeddings": table.num_embeddings, "embedding_dim": table.embedding_dim,
                    "padding_idx": table.padding_idx, "optimizer": table.optimizer,
                    "shards": [dict(file=_shard_name(r, table.world_size), rank=r, **stats[r])
                               for r in range(table.world_size)]}
        with open(os.path.join(directory, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1)
    dist.barrier(group=table.group)


def load(table, directory: str, *, match_rows: bool = True) -> None:
    """Collective: load a checkpoint written by `save` on any number of ranks. Each rank reads the shards that
    hold its rows (with modulo routing, every old shard when the rank counts differ). All-or-nothing on every
    rank."""
    error, shards = None, None
    try:
        with open(os.path.join(directory, MANIFEST)) as f:
            manifest = json.load(f)
        if manifest.get("format") != _FORMAT:
            raise ValueError(f"{directory}: not a pyscall sharded checkpoint (format {manifest.get('format')!r})")
        old_world = manifest["world_size"]
        wanted = [table.rank] if old_world == table.world_size else range(old_world)
        shards = {r: torch.load(os.path.join(directory, manifest["shards"][r]["file"]), weights_only=True)
                  for r in wanted}
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        error = e
    raise_together(error, table.group)
    load_shards(table, shards, old_world, match_rows=match_rows)


def _take_rows(widths: Tensor, packed: list, rows: Tensor) -> list:
    """Rows `rows` of a packed table (values laid out row after row at `widths`): their packed values, for each
    tensor in `packed`."""
    widths = widths.to(torch.int64)
    index = ragged_index((torch.cumsum(widths, 0) - widths)[rows], widths[rows])
    return [p[index] for p in packed]


def reshard(shards: dict, old_world: int, num_embeddings: int, rank: int, world_size: int) -> dict:
    """This rank's state dict under `world_size` ranks, from old shards {old_rank: state dict} (all of them,
    or this rank's own when the rank count is unchanged)."""
    if old_world == world_size:
        return shards[rank]
    first = shards[0]
    per_element = sorted(k for k in first if k == "values" or k.startswith("state."))
    per_row = sorted(k for k in first if k.startswith("row_state."))
    steps = {int(s["step"][0]) for s in shards.values() if "step" in s}
    if len(steps) > 1:
        raise ValueError(f"the shards disagree on the optimizer's step count: {sorted(steps)}")
    parts = []  # (new local rows, widths, {key: packed or per-row values}) from each old shard
    for old_rank, shard in shards.items():
        gids = routing.global_ids(num_embeddings, old_rank, old_world)
        if gids.numel() != shard["widths"].numel():
            raise ValueError(f"shard {old_rank} holds {shard['widths'].numel()} rows, the manifest says "
                             f"{gids.numel()}")
        rows = torch.nonzero(routing.owner(gids, world_size) == rank).reshape(-1)
        taken = _take_rows(shard["widths"], [shard[k] for k in per_element], rows)
        values = dict(zip(per_element, taken))
        values.update({k: shard[k][rows] for k in per_row})
        parts.append((routing.local_row(gids[rows], world_size), shard["widths"][rows], values))
    new_rows = torch.cat([p[0] for p in parts])
    widths = torch.cat([p[1] for p in parts])
    order = torch.argsort(new_rows)  # into local-row order
    out = {"widths": widths[order].contiguous()}
    out.update(zip(per_element, _take_rows(widths, [torch.cat([p[2][k] for p in parts]) for k in per_element],
                                           order)))
    out.update({k: torch.cat([p[2][k] for p in parts])[order] for k in per_row})
    if steps:
        out["step"] = torch.tensor([steps.pop()], dtype=torch.int64)
    return out


def load_shards(table, shards: Optional[dict], old_world: int, *, match_rows: bool = True) -> None:
    """Collective: load old shards {old_rank: state dict} saved under `old_world` ranks (see `reshard` for
    which a rank needs). All-or-nothing on every rank: a rank that loaded puts its old rows back when another
    rank failed."""
    error = None
    same = old_world == table.world_size
    try:
        needed = [table.rank] if same else list(range(old_world))
        if shards is None or not set(needed) <= set(shards):
            raise ValueError(f"expected the shards of ranks {needed}")
        num_rows = int(shards[table.rank]["widths"].numel()) if same else sum(int(s["widths"].numel())
                                                                            for s in shards.values())
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        error = e
    raise_together(error, table.group)
    if same:  # the global row count is the sum of the shards' counts
        counts = [None] * table.world_size
        dist.all_gather_object(counts, num_rows, group=table.group)
        num_rows = sum(counts)
    backup = table.local.state_dict()

    def change():
        if match_rows and num_rows != table.num_embeddings:
            raise ValueError(f"the checkpoint has {num_rows} rows, the table has {table.num_embeddings}; pass "
                             f"match_rows=False to take the checkpoint's rows")
        table.local.load_state_dict(reshard(shards, old_world, num_rows, table.rank, table.world_size),
                                    match_rows=False)

    # Undo: a rank that loaded takes its own rows back (they fitted before).
    change_together(change, lambda: table.local.load_state_dict(backup, match_rows=False), table.group)
    table._num_embeddings = num_rows
    table._local_widths = table.local.widths
