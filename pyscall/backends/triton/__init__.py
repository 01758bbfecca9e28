"""Triton backend (the GPU path; CPU tensors under TRITON_INTERPRET=1): the contract of ../CONTRACT.md, as
pyscall.backends.cpu."""
from .backward import flat_grad, fused_update
from .lookup import lookup
from .pooled import pooled

__all__ = ["lookup", "pooled", "flat_grad", "fused_update"]
