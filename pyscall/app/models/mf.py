"""Matrix factorisation on ragged `pyscall.Embedding` rows: score = dot product over the common prefix."""
from __future__ import annotations

import torch
from torch import nn


class MF(nn.Module):
    """Scores users against items with the padded (zeros past each width) user and item rows.

    `users` and `items` are `pyscall.Embedding` tables in fused mode: each is looked up once per training
    step (all its ids concatenated), so one backward is one optimizer step per table.
    """

    def __init__(self, users: nn.Module, items: nn.Module):
        super().__init__()
        self.users, self.items = users, items

    def batch(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, propagated=None):
        """(positive scores, negative scores, ego embeddings of the batch) for BPR. `propagated` is unused (MF
        has no propagation); it keeps one call for both models."""
        u = self.users(users)
        both = self.items(torch.cat([pos, neg]))
        p, n = both.split(len(pos))
        return (u * p).sum(-1), (u * n).sum(-1), [u, both]

    @torch.no_grad()
    def scorer(self):
        """score_fn(user ids [b]) -> [b, n_items], for evaluation on the current weights."""
        items = self.items.to_dense()
        dense_users = self.users.to_dense()
        return lambda ids: dense_users[ids.to(dense_users.device)] @ items.T
