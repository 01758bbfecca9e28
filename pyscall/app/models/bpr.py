"""BPR loss and vectorised negative sampling, shared by every base recommender."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, ego: list[torch.Tensor],
             l2: float = 1e-4) -> torch.Tensor:
    """mean softplus(s_neg - s_pos) + l2 * (sum of squared ego embeddings of the batch) / batch size."""
    batch = pos_scores.shape[0]
    reg = sum(e.pow(2).sum() for e in ego) / (2 * max(1, batch))
    return F.softplus(neg_scores - pos_scores).mean() + l2 * reg


class NegativeSampler:
    """Uniform negatives over the item vocabulary, re-drawn (a few rounds, all rows at once) when they hit a
    known positive of the user. Positives are held as sorted keys user * n_items + item."""

    def __init__(self, positives: np.ndarray, n_items: int, rounds: int = 3):
        if n_items <= 0:
            raise ValueError(f"n_items must be > 0, got {n_items}")
        positives = np.asarray(positives, dtype=np.int64).reshape(-1, 2)
        self.n_items = n_items
        self.rounds = rounds
        self.keys = torch.from_numpy(np.unique(positives[:, 0] * n_items + positives[:, 1]))

    def _known(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if len(self.keys) == 0:
            return torch.zeros_like(items, dtype=torch.bool)
        keys = users * self.n_items + items
        at = torch.searchsorted(self.keys, keys).clamp_(max=len(self.keys) - 1)
        return self.keys[at] == keys

    def sample(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One negative item per user (int64), drawn with `generator`."""
        items = torch.randint(self.n_items, users.shape, generator=generator)
        for _ in range(self.rounds):
            hit = self._known(users, items)
            if not hit.any():
                break
            items[hit] = torch.randint(self.n_items, (int(hit.sum()),), generator=generator)
        return items
