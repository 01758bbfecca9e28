"""The pyscall operators, registered with torch.library so that torch.compile traces through them; one op per
module: `lookup` (padded rows, lookup.py), `bag` (pooled bags, pooled.py) and the backward they share
(backward.py: the flat weight gradient, dense or sparse, the fused optimizer update, the per_sample_weights
gradient). A table reaches them as two bundles (table.py): `Table` (weight, offsets, widths, uniform_width) and
`Fused` (the optimizer's buffers). Kernels come from pyscall.backends: `cpu` (C++) for CPU tensors, `triton` for
CUDA tensors (and CPU tensors with PYSCALL_BACKEND=triton and TRITON_INTERPRET=1, to test the Triton code)."""
from ..spec import POOL_MODES
from .lookup import lookup
from .pooled import bag
from .table import Fused, Table

MODES = tuple(POOL_MODES)

__all__ = ["lookup", "bag", "Table", "Fused", "MODES"]
