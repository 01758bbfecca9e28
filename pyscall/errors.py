"""Exceptions raised by pyscall."""


class BudgetExceededError(RuntimeError):
    """An operation would need more bytes than the table's ``budget_bytes``, which
    counts its flat buffers, per-row state and the rows' metadata (16 bytes a row).

    The one budget exception: raised by construction, ``append``, ``resize``,
    ``set_widths`` and ``set_budget`` (the C++ arena's ``BudgetError`` arrives as
    this type through ``pyscall._C``), and by the SCALL trainer
    (``pyscall.app.train.BudgetError`` is this class) when a size policy's widths
    would not fit. It subclasses RuntimeError so that code catching RuntimeError
    keeps working. When it is raised, widths, values, optimizer state and
    statistics are exactly as they were before the call.
    """


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (empty, truncated, corrupted, or holding more than tensors
    and plain values); the message names the file and the cause is chained."""
