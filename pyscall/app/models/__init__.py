"""Base recommenders on ragged `pyscall.Embedding` rows, trained with BPR."""
from .bpr import NegativeSampler, bpr_loss
from .lightgcn import LightGCN, normalized_adjacency, propagate_together
from .mf import MF

MODELS = {"lightgcn": LightGCN, "mf": MF}

__all__ = ["LightGCN", "MF", "MODELS", "NegativeSampler", "bpr_loss", "normalized_adjacency", "propagate_together"]
