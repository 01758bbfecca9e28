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
        """(final user matrix, final item matrix, ego user matrix, ego item matrix): the ego matrices padded to
        d_max, the final ones cut to the widest row (the columns past it are zero)."""
        return propagate_together([self])[0]

    def batch(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, propagated=None):
        """BPR inputs of a batch; `propagated`: this model's entry of `propagate_together`, if already run."""
        fu, fi, eu, ei = propagated if propagated is not None else self.propagate()
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


def propagate_together(models: list) -> list:
    """`propagate` of several LightGCNs over one graph (the same object) and one layer count, in one sparse
    product per layer: their columns side by side. Each model's columns depend on its own rows only."""
    first = models[0]
    if first.graph is None:
        raise RuntimeError("LightGCN.set_graph(pairs) must be called before training or scoring")
    if any(m.graph is not first.graph or m.layers != first.layers for m in models):
        raise ValueError("propagate_together needs models that share one graph and one layer count")
    device = first.graph.device
    n_users, n_items = first.users.num_embeddings, first.items.num_embeddings
    columns, egos = [], []
    for m in models:
        if (m.users.num_embeddings, m.items.num_embeddings) != (n_users, n_items) or \
                first.graph.shape[0] != n_users + n_items:
            raise RuntimeError(f"graph has {first.graph.shape[0]} nodes, tables have {m.users.num_embeddings} + "
                               f"{m.items.num_embeddings} rows; call set_graph after changing the vocabulary")
        ego_u = m.users(torch.arange(n_users, device=device))
        ego_i = m.items(torch.arange(n_items, device=device))
        # Columns past the widest row are zero in every layer: propagate only the others (exact; a table of
        # mean width 4 and d_max 256 propagates a few columns, not 256).
        widest = max(int(t.widths.max()) if t.num_embeddings else 0 for t in (m.users, m.items))
        columns.append(torch.cat([ego_u[:, :widest], ego_i[:, :widest]]))
        egos.append((ego_u, ego_i))
    x = torch.cat(columns, dim=1) if len(columns) > 1 else columns[0]
    total = x
    for _ in range(first.layers):
        x = _SymmetricPropagate.apply(first.graph, x)
        total = total + x
    final = (total / (first.layers + 1)).split([c.shape[1] for c in columns], dim=1)
    return [(f[:n_users], f[n_users:], eu, ei) for f, (eu, ei) in zip(final, egos)]
