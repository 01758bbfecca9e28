"""LightGCN on ragged `pyscall.Embedding` rows: layers 0..L of propagation over the symmetric-normalised
user-item graph, averaged; score = dot product. The padded [n, d_max] matrix is propagated, and autograd
flows back through it into the fused update of every row it touched."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn


def normalized_adjacency(pairs: np.ndarray, n_users: int, n_items: int, device=None,
                         dtype=torch.float32) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite graph (users first, then items) as a sparse CSR tensor.
    Repeated (user, item) pairs count once."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    keys = np.unique(pairs[:, 0] * n_items + pairs[:, 1])
    u, i = keys // n_items, keys % n_items + n_users
    rows, cols = np.concatenate([u, i]), np.concatenate([i, u])
    n = n_users + n_items
    degree = np.bincount(rows, minlength=n).astype(np.float64)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1)), 0.0)
    values = inv_sqrt[rows] * inv_sqrt[cols]
    coo = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(values),
                                  (n, n), check_invariants=True).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is what we need here
        warnings.simplefilter("ignore", UserWarning)
        return coo.to(dtype=dtype).to_sparse_csr().to(device)


class _SymmetricPropagate(torch.autograd.Function):
    """graph @ x for a symmetric sparse graph: the gradient is graph @ grad as well. (torch's own backward
    of a CSR product transposes the matrix on every call, which costs seconds on a large graph.)"""

    @staticmethod
    def forward(ctx, graph, x):
        ctx.graph = graph
        return graph @ x

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.graph @ grad


class LightGCN(nn.Module):
    """`graph` is `normalized_adjacency` of all training interactions so far; set it with `set_graph`."""

    def __init__(self, users: nn.Module, items: nn.Module, layers: int = 3):
        super().__init__()
        if layers < 0:
            raise ValueError(f"layers must be >= 0, got {layers}")
        self.users, self.items, self.layers = users, items, layers
        self.graph = None

    def set_graph(self, pairs: np.ndarray) -> None:
        n_users, n_items = self.users.num_embeddings, self.items.num_embeddings
        device = self.users.to_dense().device if n_users else None
        self.graph = normalized_adjacency(pairs, n_users, n_items, device=device)

    def propagate(self):
        """(final user matrix, final item matrix, ego user matrix, ego item matrix), all padded to d_max."""
        if self.graph is None:
            raise RuntimeError("LightGCN.set_graph(pairs) must be called before training or scoring")
        device = self.graph.device
        n_users, n_items = self.users.num_embeddings, self.items.num_embeddings
        if self.graph.shape[0] != n_users + n_items:
            raise RuntimeError(f"graph has {self.graph.shape[0]} nodes, tables have {n_users} + {n_items} rows; "
                               "call set_graph after changing the vocabulary")
        ego_u = self.users(torch.arange(n_users, device=device))
        ego_i = self.items(torch.arange(n_items, device=device))
        x = torch.cat([ego_u, ego_i])
        total = x
        for _ in range(self.layers):
            x = _SymmetricPropagate.apply(self.graph, x)
            total = total + x
        final = total / (self.layers + 1)
        return final[:n_users], final[n_users:], ego_u, ego_i

    def batch(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        fu, fi, eu, ei = self.propagate()
        # index_select, not fu[users]: its backward is an index_add_, about 3x faster on the CPU than the
        # accumulating index_put_ behind advanced indexing, which took 38% of a `pyscall stream` run.
        take = torch.index_select
        u = take(fu, 0, users)
        return ((u * take(fi, 0, pos)).sum(-1), (u * take(fi, 0, neg)).sum(-1),
                [take(eu, 0, users), take(ei, 0, pos), take(ei, 0, neg)])

    @torch.no_grad()
    def scorer(self):
        fu, fi, _, _ = self.propagate()
        return lambda ids: fu[ids.to(fu.device)] @ fi.T
