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


# Bad input that torch reports with another exception type than pyscall's documented one. Each class derives
# from both, so code written for either (pyscall's `except ValueError`, torch's `except RuntimeError`) catches it.
class OffsetsError(ValueError, RuntimeError):
    """An EmbeddingBag's offsets do not describe bags of the input: the first is not 0, they decrease, or the
    last is past the input's length (torch raises RuntimeError)."""


class InputDtypeError(TypeError, RuntimeError):
    """Indices, offsets or per_sample_weights of a dtype the lookup does not take (torch raises RuntimeError)."""


class PaddingIdxError(ValueError, AssertionError):
    """padding_idx outside [-num_embeddings, num_embeddings) (torch asserts)."""
