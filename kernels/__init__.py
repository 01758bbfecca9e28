"""Triton kernels for the GPU path (installed as pyscall.kernels)."""
