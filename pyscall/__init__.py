"""pyscall: ragged, budget-bounded embedding tables for streaming recommenders."""
from . import _C

__version__ = "0.1.0"
