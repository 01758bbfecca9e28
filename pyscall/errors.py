"""Exceptions raised by pyscall."""


class BudgetExceededError(RuntimeError):
    """An operation would need more bytes than the table's ``budget_bytes``, which
    counts its flat buffers, per-row state and the rows' metadata (16 bytes a row).

    Raised by construction, ``append``, ``resize`` and ``set_widths`` (the C++
    arena raises it through ``pyscall._C``). It subclasses RuntimeError so that
    code catching RuntimeError keeps working. When it is raised, widths, values,
    optimizer state and statistics are exactly as they were before the call.
    """


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (empty, truncated, corrupted, or holding more than tensors
    and plain values); the message names the file and the cause is chained."""
