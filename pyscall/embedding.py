"""`pyscall.Embedding` and `pyscall.EmbeddingBag`: drop-in replacements for the torch modules whose rows each have
their own width inside a hard memory budget. Their forward is one call of `pyscall.ops` (`ops.lookup` / `ops.bag`)
holding the table's layout lock; everything else they share is pyscall.ragged_table.RaggedTable."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import ops
from .errors import InputDtypeError
from .ragged_table import RaggedTable
from .spec import POOL_MODES

__all__ = ["Embedding", "EmbeddingBag", "RaggedTable"]


class Embedding(RaggedTable):
    """A lookup table whose rows each have their own width (0..embedding_dim), inside `budget_bytes`.

    With `widths=None` it matches `torch.nn.Embedding` (values, gradients, init). `optimizer=None`
    is drop-in mode: `weight` is the flat buffer as an `nn.Parameter` and any torch optimizer trains
    it; with `sparse=True` its gradient is a sparse COO tensor of the touched entries, as torch's
    `sparse=True` gives (for SparseAdam, SGD, Adagrad). `optimizer="sgd" | "adagrad" |
    "rowwise_adagrad" | "adam"` fuses the update into backward: each backward through a forward call
    is one optimizer step on the rows that call touched (a table looked up twice in one graph takes two
    steps), so look up all ids of a training step in one call (concatenate them) for one step.
    """

    def forward(self, input: Tensor) -> Tensor:
        if torch.compiler.is_compiling():  # the compiled ops take the lock themselves, named by its key
            return self._lookup(input, None)
        # The layout lock, shared, from reading the layout to the kernel's end: no other thread re-lays the
        # table out meanwhile (the backward takes it again for its own kernels).
        lock = self._arena.lock
        lock.acquire_shared()
        try:
            return self._lookup(input, lock)
        finally:
            lock.release_shared()

    def _lookup(self, input: Tensor, lock) -> Tensor:
        table, fused = self._bundles()
        ids = self._ids(input, table.weight)
        out = ops.lookup(table, ids, self._arena.d_max, -1 if self.padding_idx is None else self.padding_idx, fused,
                         sparse=self.sparse, lock=lock, key=0 if lock is not None else self._arena.lock_key)
        # A 1-D input already has the output's shape: no view (and no view node in backward).
        return out if input.dim() == 1 else out.view(*input.shape, self.embedding_dim)


class EmbeddingBag(RaggedTable):
    """Pooled lookups (sum, mean, max) over bags of ragged rows, with torch.nn.EmbeddingBag's semantics."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, mode: str = "mean",
                 include_last_offset: bool = False, padding_idx: Optional[int] = None, **kwargs):
        if mode not in POOL_MODES:
            raise ValueError(f"mode must be one of {tuple(POOL_MODES)}, got {mode!r}")
        super().__init__(num_embeddings, embedding_dim, padding_idx, **kwargs)
        self.mode = mode
        self.include_last_offset = include_last_offset

    def forward(self, input: Tensor, offsets: Optional[Tensor] = None,
                per_sample_weights: Optional[Tensor] = None) -> Tensor:
        if torch.compiler.is_compiling():
            return self._pool(input, offsets, per_sample_weights, None)
        lock = self._arena.lock  # held shared from reading the layout to the kernel's end, as in Embedding
        lock.acquire_shared()
        try:
            return self._pool(input, offsets, per_sample_weights, lock)
        finally:
            lock.release_shared()

    def _pool(self, input: Tensor, offsets: Optional[Tensor], per_sample_weights: Optional[Tensor], lock) -> Tensor:
        table, fused = self._bundles()
        weight = table.weight
        ids = self._ids(input, weight)
        if input.dim() == 2:
            if offsets is not None:
                raise ValueError("if input is 2D, then offsets has to be None, as input is treated is a "
                                 "mini-batch of fixed length sequences")
            bag_offsets = torch.arange(0, ids.numel() + 1, max(1, input.shape[1]), device=ids.device)
            if input.shape[1] == 0:
                bag_offsets = ids.new_zeros(input.shape[0] + 1)
        elif input.dim() == 1:
            if offsets is None:
                raise ValueError("offsets has to be a 1D Tensor but got None")
            if not torch.is_tensor(offsets):
                raise TypeError(f"offsets must be a tensor, got {type(offsets).__name__}")
            if offsets.device != input.device:
                raise ValueError(f"offsets must be on the device of input ({input.device}), got {offsets.device}")
            if offsets.dim() != 1:
                raise ValueError("offsets has to be a 1D Tensor")
            if offsets.dtype not in (torch.int64, torch.int32):
                raise InputDtypeError(f"offsets must be int64 or int32, got {offsets.dtype}")
            bag_offsets = offsets if offsets.dtype == torch.int64 else offsets.to(torch.int64)
            if not self.include_last_offset:
                bag_offsets = torch.cat([bag_offsets, bag_offsets.new_full((1,), ids.numel())])
        else:
            raise ValueError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension {input.dim()}")
        if per_sample_weights is not None:
            if self.mode != "sum":
                raise NotImplementedError("embedding_bag: per_sample_weights was not None. per_sample_weights "
                                          f"is only supported for mode='sum' (got mode='{self.mode}')")
            if per_sample_weights.shape != input.shape:
                # "same shape as the input": the words torch's message has and its tests match on
                raise ValueError(f"per_sample_weights has shape {tuple(per_sample_weights.shape)}; it must have "
                                 f"the same shape as the input {tuple(input.shape)}")
            if per_sample_weights.dtype != weight.dtype:
                raise InputDtypeError(f"per_sample_weights must have the same type as the weight ({weight.dtype}), "
                                      f"got {per_sample_weights.dtype}")
            if per_sample_weights.device != weight.device:
                raise ValueError(f"per_sample_weights must be on {weight.device}, got {per_sample_weights.device}")
            per_sample_weights = per_sample_weights.reshape(-1)
        return ops.bag(table, ids, bag_offsets.contiguous(), self.mode, per_sample_weights, self._arena.d_max,
                       -1 if self.padding_idx is None else self.padding_idx, fused, sparse=self.sparse, lock=lock,
                       key=0 if lock is not None else self._arena.lock_key)
