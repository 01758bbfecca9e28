"""Triton kernels for the GPU path (installed as pyscall.kernels); same contract as pyscall.backend_cpu."""
from .backward import flat_grad, fused_update
from .lookup import lookup
from .pooled import pooled

__all__ = ["lookup", "pooled", "flat_grad", "fused_update"]
