"""A ragged table sharded row-wise over torch.distributed (gloo on the CPU, NCCL on the GPU): see sharded.py.

`import pyscall` does not load this package; `import pyscall.distributed` does.
"""
from .manifest import load, load_shards, save
from .exchange import WIRE
from .sharded import ShardedEmbedding, ShardedEmbeddingBag

__all__ = ["ShardedEmbedding", "ShardedEmbeddingBag", "save", "load", "load_shards", "WIRE"]
