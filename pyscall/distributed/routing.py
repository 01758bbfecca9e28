"""Which rank owns a global id, and where the row sits in that rank's local table.

The rule is modulo: global id g lives on rank g % world_size as local row g // world_size. Streams add
users and items at the end of the vocabulary; with modulo a run of k new ids spreads over the ranks
round-robin (no rank gets more than ceil(k / world_size)), where a block rule would put every new id on
the last rank until it fills. Local rows stay in global-id order on every rank, so a global append is a
local append on each owner.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["owner", "local_row", "global_ids", "local_count"]


def owner(ids: Tensor, world_size: int) -> Tensor:
    """The rank holding each global id."""
    return torch.remainder(ids, world_size)


def local_row(ids: Tensor, world_size: int) -> Tensor:
    """Each global id's row in its owner's local table."""
    return torch.div(ids, world_size, rounding_mode="floor")


def local_count(num_embeddings: int, rank: int, world_size: int) -> int:
    """Rows rank `rank` holds of a table of `num_embeddings` global rows."""
    return max(0, (num_embeddings - rank + world_size - 1) // world_size)


def global_ids(num_embeddings: int, rank: int, world_size: int) -> Tensor:
    """The global ids rank `rank` holds, in local-row order."""
    return torch.arange(rank, num_embeddings, world_size, dtype=torch.int64)
