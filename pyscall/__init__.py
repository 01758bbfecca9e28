"""pyscall: ragged, budget-bounded embedding tables for streaming recommenders (SCALL, CIKM 2024)."""
from . import _C
from .errors import BudgetExceededError, InputDtypeError, OffsetsError, PaddingIdxError
from .arena import RaggedArena
from .embedding import Embedding, EmbeddingBag

__version__ = "0.1.0"
__all__ = ["Embedding", "EmbeddingBag", "RaggedArena", "BudgetExceededError", "OffsetsError", "InputDtypeError",
           "PaddingIdxError"]
