"""SCALL (Qu et al., CIKM 2024): per-entity embedding sizes for streaming recommenders, inside a budget."""
from .sizes import power_law_sizes

__all__ = ["power_law_sizes"]
