"""RaggedArena: flat torch buffers laid out by the C++ arena (``pyscall._C.Arena``). (Over 400 lines: this
docstring states the semantics every operation shares; the replay is pyscall/replay.py, the lock
pyscall/layout_lock.py, input checks pyscall/checks.py.)

Row ``i`` holds ``weight[offsets[i] : offsets[i] + widths[i]]``; its logical value
is that slice followed by zeros up to ``d_max``. The C++ side makes every layout
decision and returns a plan (how rows move, the capacity, the per-row state);
this module owns the tensors, and pyscall.replay allocates what a plan needs
before the arena commits its metadata, then moves the rows.

Semantics shared by every operation:
- shrinking keeps the first new-width values bit for bit; growing keeps every
  old value and new positions start at 0, with 0 optimizer state;
- ``append`` gives new rows the table's ``row_init`` (state stays 0);
- ``release`` frees a row's storage (width 0) and zeroes its per-row state;
- ``resize`` with a duplicate id is LAST-WINS: only the last (id, width) pair
  of that id counts, exactly as if it were the only one given;
- an operation that would need more than ``budget_bytes`` raises
  :class:`pyscall.errors.BudgetExceededError`; bad input raises IndexError
  (ids), ValueError (widths, shapes) or TypeError (dtypes). In every such case
  widths, values, optimizer state and statistics are unchanged; so they are when
  a buffer cannot be allocated (out of memory): every buffer is allocated
  before the metadata changes.
- ``budget_bytes`` covers weight, per-element state, per-row state (float32) and
  the rows' metadata, counted at ``METADATA_BYTES_PER_ROW`` (16) bytes a row
  (``memory_stats()["row_metadata_bytes"]``): ``capacity_bytes +
  row_metadata_bytes <= budget_bytes``. A request that would not fit is refused
  before anything is allocated, as is one larger than the machine's memory
  (MemoryError), budget or not. ``companions`` (extra flat tensors with the
  weight's layout, e.g. a torch optimizer's ``exp_avg``) move with the rows but
  do not count toward it, nor does the working memory of one operation (its
  plan, the old metadata it keeps while staged, and the new buffers while the
  old ones still exist).
- Threads: ``lock`` is the table's readers-writer lock. Layout operations hold
  it exclusively, reads of the layout (``to_dense``, ``validate``, kernels
  called by the modules) hold it shared, so no thread reads a buffer or the
  metadata while another re-lays them out. Code of your own that reads
  ``weight``, ``offsets`` or ``widths`` while other threads may change the
  layout holds ``with arena.lock.shared():``.
- ``offsets``/``widths`` are zero-copy views of the C++ metadata: read them,
  never write them, and re-read them after each operation. ``uniform_width``
  is W > 0 while every row has width W at offset ``id * W`` (a table built
  without widths, until a layout operation breaks that), else 0.
"""
from __future__ import annotations

import weakref
from typing import Callable, Sequence

import numpy as np
import torch

from . import _C
from .checks import MAX_BYTES as _MAX_BYTES, check_budget_bytes, memory_ceiling
from .checks import check_float_dtype, check_int_dtype, int_array
from .layout_lock import LayoutLock, exclusive as _exclusive, shared as _shared
from .replay import CpuReplay, CudaReplay

__all__ = ["RaggedArena", "LayoutLock", "METADATA_BYTES_PER_ROW", "check_budget_bytes", "memory_ceiling"]

# What the budget counts for each row's metadata (csrc/arena/arena.h, kMetadataBytesPerRow).
METADATA_BYTES_PER_ROW = _C.METADATA_BYTES_PER_ROW


def _cpu_buffer(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """An unwritten CPU buffer for a table's values or state, on transparent huge pages where Linux
    allows them: batches read random rows, and with 4 KiB pages nearly every row costs a TLB miss
    (csrc/arena/huge_pages.h)."""
    buffer = torch.empty(numel, dtype=dtype)
    _C.advise_huge_pages(buffer.data_ptr(), buffer.numel() * buffer.element_size())
    return buffer


class RaggedArena:
    """Flat weight/state buffers of a table whose rows have their own widths."""

    def __init__(self, num_rows: int, d_max: int, widths=None, *, dtype=torch.float32,
                 device="cpu", state_per_element: int = 0, state_per_row: int = 0,
                 state_dtype=torch.float32, budget_bytes: int | None = None,
                 row_init: Callable[[int, torch.dtype, torch.device], torch.Tensor] | None = None):
        for name, value in (("num_rows", num_rows), ("d_max", d_max)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
            if not 0 <= value <= _MAX_BYTES:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if state_per_element not in (0, 1, 2):
            raise ValueError(f"state_per_element must be 0, 1 or 2, got {state_per_element!r}")
        if state_per_row not in (0, 1):
            raise ValueError(f"state_per_row must be 0 or 1, got {state_per_row!r}")
        budget_bytes = check_budget_bytes(budget_bytes)
        dtype = check_float_dtype(dtype, "dtype")
        state_dtype = check_float_dtype(state_dtype, "state_dtype")
        device = torch.device(device)
        state_size = torch.empty(0, dtype=state_dtype).element_size()
        bytes_per_element = torch.empty(0, dtype=dtype).element_size() + state_per_element * state_size
        self._arena = _C.Arena(int(d_max), bytes_per_element, state_per_row * 4,
                               -1 if budget_bytes is None else int(budget_bytes))
        self._arena.set_memory_limit(memory_ceiling(device))
        self._adopt(LayoutLock())
        self.relayouts = 0  # layout operations that went through (a table tells from it whether rows moved)
        self.d_max = int(d_max)
        self._row_init = row_init
        self._config = dict(dtype=dtype, device=device, state_per_element=state_per_element,
                            state_per_row=state_per_row, state_dtype=state_dtype, row_init=row_init)
        self.weight = torch.zeros(0, dtype=dtype, device=device)
        self.state = [torch.zeros(0, dtype=state_dtype, device=device)
                      for _ in range(state_per_element)]
        self.row_state = [torch.zeros(0, dtype=torch.float32, device=device)  # per-row state is float32
                          for _ in range(state_per_row)]
        self._refresh()
        op = f"a new table of {num_rows} rows"  # budget messages name the construction, not an append
        if widths is None:  # every row d_max wide, refused by the budget before any array is built
            self._arena.check_append(int(num_rows), min(int(num_rows) * int(d_max), _MAX_BYTES // 4), op)
            self._append(int(num_rows), (), uniform=int(d_max))
            return
        self._arena.check_append(int(num_rows), 0, op)  # the rows' metadata, before their widths are copied
        widths = int_array(widths, "widths")
        if widths.size != num_rows:
            raise ValueError(f"widths must have num_rows={num_rows} entries, got {widths.size}")
        self._append(widths, (), op=op)

    # Pickling (and copy.deepcopy) keeps the exact layout, so the buffers, and any torch optimizer state
    # laid out like them, come back valid; offsets and widths become views of the new metadata.
    def __getstate__(self) -> dict:
        with self.lock.shared():
            state = self.__dict__.copy()
            state["_arena"] = self._arena.layout_state()
        del state["lock"]  # a copy gets a lock of its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _arena=_C.Arena.with_layout(*state["_arena"]))
        self.__dict__.setdefault("relayouts", 0)  # (pickled before it existed)
        self._arena.set_memory_limit(memory_ceiling(self.weight.device))
        self._adopt(LayoutLock())
        self._refresh()

    def _adopt(self, lock: LayoutLock) -> None:
        """Makes `lock` this arena's (a table keeps its lock when load_state_dict gives it a new arena)."""
        self.lock = lock
        self.lock_key = lock.key  # what a compiled graph passes to the ops (an int, constant per table)
        lock.arena = weakref.ref(self)

    # ---- views and sizes -------------------------------------------------
    def _refresh(self) -> None:
        # A backward may hold the previous metadata tensors (views of C++ memory that may be freed
        # by now): bump the version of widths (they are saved together with offsets) so that
        # autograd refuses them, as it refuses a weight changed in place between forward and backward.
        if hasattr(self, "widths"):
            torch.autograd.graph.increment_version(self.widths)
        # The metadata lives on the host; a CUDA table gets device copies for its kernels.
        self.offsets = torch.from_numpy(self._arena.offsets).to(self.weight.device)
        self.widths = torch.from_numpy(self._arena.widths).to(self.weight.device)
        # W > 0 while every row has width W at offset id * W: the CPU kernels then skip the metadata.
        self.uniform_width = self._arena.uniform_width

    @property
    def budget_bytes(self) -> int | None:
        return self.memory_stats()["budget_bytes"]

    @_exclusive
    def set_budget(self, budget_bytes: int | None, companions: Sequence[torch.Tensor] = ()) -> None:
        """A new budget (None: unbounded); when only the free space is over it, the rows are packed first (the
        companions move with them). Raises BudgetExceededError, changing nothing, when the rows in use do not fit."""
        budget_bytes = check_budget_bytes(budget_bytes)
        companions = self._check_companions(companions)
        self._layout(lambda: self._arena.set_budget(-1 if budget_bytes is None else budget_bytes), companions,
                     counts_only_moves=True)

    @_shared
    def packed_index(self) -> torch.Tensor:
        """Flat positions of every stored value, row after row in id order (int64, on the weight's device)."""
        return self._packed_index()

    def _packed_index(self) -> torch.Tensor:
        widths = self.widths.to(torch.int64)
        total = int(widths.sum())
        starts = torch.repeat_interleave(self.offsets - (torch.cumsum(widths, 0) - widths), widths,
                                         output_size=total)
        return starts + torch.arange(total, device=starts.device)

    def restored(self, widths, values: torch.Tensor, state: Sequence[torch.Tensor],
                 row_state: Sequence[torch.Tensor], weight: torch.Tensor | None = None) -> "RaggedArena":
        """A new arena with this one's configuration and budget holding the given packed rows
        (the layout of ``state_dict``). Everything is checked and the new arena built before anything
        else changes: on an error this arena and ``weight`` are untouched. With ``weight`` given, that
        tensor (e.g. an nn.Parameter) takes the new storage, the new arena takes over this one's lock
        (it replaces this arena in its table), and the caller holds ``self.lock`` exclusively."""
        self._check_packed(widths, values, state, row_state)
        widths = int_array(widths, "widths")
        config = dict(self._config, row_init=None)
        arena = RaggedArena(widths.size, self.d_max, widths, budget_bytes=self.budget_bytes, **config)
        arena._row_init = self._row_init
        index = arena._packed_index()
        with torch.no_grad():
            arena.weight[index] = values.to(arena.weight.dtype).to(arena.weight.device)
            for dst, src in zip(arena.state, state):
                dst[index] = src.to(dst.dtype).to(dst.device)
            for dst, src in zip(arena.row_state, row_state):
                dst.copy_(src)
        if weight is not None:
            weight.data = arena.weight
            arena.weight = weight
            arena._adopt(self.lock)
            torch.autograd.graph.increment_version(self.widths)  # a pending backward must not use the old layout
        return arena

    def _check_packed(self, widths, values, state, row_state) -> None:
        """The checks of restored(): shapes, dtypes and widths of packed rows, before anything is built."""
        if not isinstance(widths, (torch.Tensor, np.ndarray, list, tuple)) or np.ndim(widths) != 1:
            raise ValueError(f"widths must be a 1-D tensor of row widths, got "
                             f"{tuple(np.shape(widths)) if hasattr(widths, 'shape') else type(widths).__name__}")
        widths = int_array(widths, "widths")
        if widths.size and (widths.min() < 0 or widths.max() > self.d_max):  # before the sizes they imply
            raise ValueError(f"widths must lie in [0, d_max={self.d_max}], got [{widths.min()}, {widths.max()}]")
        if len(state) != len(self.state) or len(row_state) != len(self.row_state):
            raise ValueError(f"expected {len(self.state)} state and {len(self.row_state)} row_state buffers, "
                             f"got {len(state)} and {len(row_state)}")
        total = int(widths.sum(dtype=np.int64))
        for name, t, numel in [("values", values, total), *[(f"state.{k}", v, total) for k, v in enumerate(state)],
                               *[(f"row_state.{k}", v, widths.size) for k, v in enumerate(row_state)]]:
            if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() != numel:
                raise ValueError(f"{name} must be a 1-D tensor of {numel} elements, got "
                                 f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
            if not t.is_floating_point():  # never cast integers, bools or complex numbers silently
                raise TypeError(f"{name} must be a floating-point tensor (the table holds "
                                f"{self.weight.dtype}), got {t.dtype}")

    @property
    def num_rows(self) -> int:
        return self._arena.num_rows

    @property
    def capacity(self) -> int:
        """Elements in each flat buffer."""
        return self._arena.capacity

    # ---- layout operations ----------------------------------------------
    @_exclusive
    def append(self, widths, companions: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Adds rows (an int: one row, or 1-D widths); returns their ids (int64)."""
        if isinstance(widths, (torch.Tensor, np.ndarray)):  # their dtype, then their rows, before a copy
            check_int_dtype(widths, "widths")
            self._arena.check_append(int(np.prod(widths.shape)), 0)
        widths = int_array(widths, "widths")
        return self._append(widths, companions)

    def _append(self, widths, companions, uniform: int | None = None, op: str = "append") -> torch.Tensor:
        """append's body; with `uniform`, `widths` is a row count and every new row is that wide; `op` names
        the operation in a budget error."""
        companions = self._check_companions(companions)
        count = widths if uniform is not None else widths.size
        if uniform is None:
            if widths.size and (widths.min() < 0 or widths.max() > self.d_max):
                bad = int(np.flatnonzero((widths < 0) | (widths > self.d_max))[0])
                raise ValueError(f"width {widths[bad]} at position {bad} is outside [0, d_max={self.d_max}]")
            # Then the budget: the row init and the per-row state below allocate for every new row.
            self._arena.check_append(count, int(widths.sum(dtype=np.int64)), op)
        first = self.num_rows
        init = self._initial_values(widths if uniform is None else None, count, uniform)
        if uniform is None:
            self._layout(lambda: self._arena.append(widths), companions)
        else:
            self._layout(lambda: self._arena.append_uniform(count, uniform), companions)
        if init is not None:
            self._write_new_rows(first, init)
        return torch.arange(first, self.num_rows, dtype=torch.int64)

    @_exclusive
    def resize(self, ids, widths, companions: Sequence[torch.Tensor] = ()) -> None:
        """Batched, all-or-nothing. ``widths``: one int for all ids, or one per id. Last-wins."""
        ids = int_array(ids, "ids")
        if isinstance(widths, (int, np.integer)) and not isinstance(widths, (bool, np.bool_)):
            widths = np.full(ids.size, int(widths), dtype=np.int64)
        else:
            widths = int_array(widths, "widths")
        if widths.size != ids.size:
            raise ValueError(f"widths must be an int or match ids ({ids.size} entries), "
                             f"got {widths.size}")
        companions = self._check_companions(companions)
        self._layout(lambda: self._arena.resize(ids, widths), companions)

    @_exclusive
    def set_widths(self, widths, companions: Sequence[torch.Tensor] = ()) -> None:
        """Every row at once (``num_rows`` widths). Capacity becomes the total width when that grows
        it or frees more than 1/8 of it; otherwise it is kept (``compact()`` trims exactly)."""
        widths = int_array(widths, "widths")
        companions = self._check_companions(companions)
        self._layout(lambda: self._arena.set_widths(widths), companions)

    @_exclusive
    def release(self, ids, companions: Sequence[torch.Tensor] = ()) -> None:
        """Frees the rows' storage (width 0) and zeroes their per-row state."""
        ids = int_array(ids, "ids")
        companions = self._check_companions(companions)
        self._layout(lambda: self._arena.release(ids), companions)

    @_exclusive
    def compact(self, companions: Sequence[torch.Tensor] = ()) -> None:
        """Packs every row from offset 0 (fragmentation 0) and trims capacity."""
        companions = self._check_companions(companions)
        self._layout(lambda: self._arena.compact(), companions)

    # ---- inspection -------------------------------------------------------
    @_shared
    def validate(self) -> None:
        """Raises RuntimeError on overlap, out-of-capacity rows or inexact accounting."""
        self._arena.validate()
        for name, buf in self._named_buffers():
            if buf.numel() != self.capacity:
                raise RuntimeError(f"arena invalid: {name} holds {buf.numel()} elements, "
                                   f"capacity is {self.capacity}")
        for i, rs in enumerate(self.row_state):
            if rs.numel() != self.num_rows:
                raise RuntimeError(f"arena invalid: row_state[{i}] holds {rs.numel()} entries, "
                                   f"num_rows is {self.num_rows}")

    def memory_stats(self) -> dict:
        """Bytes of the flat buffers (budget_bytes None when unbounded) and of the metadata. The budget
        bounds capacity_bytes + row_metadata_bytes."""
        stats = self._arena.stats()  # one C++ call under the GIL: a consistent view without the lock
        if stats["budget_bytes"] < 0:
            stats["budget_bytes"] = None
        return stats

    def _dense_places(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask [num_rows, d_max] of the stored positions, their flat indices in the buffers, row-major)."""
        widths = self.widths.to(torch.int64)
        cols = torch.arange(self.d_max, dtype=torch.int64, device=widths.device)
        mask = cols < widths[:, None]
        return mask, (self.offsets[:, None] + cols)[mask]

    @_shared
    def to_dense(self, buffer: torch.Tensor | None = None) -> torch.Tensor:
        """[num_rows, d_max] copy of ``buffer`` (default: weight), zeros past each width."""
        return self._to_dense(buffer)

    def _to_dense(self, buffer: torch.Tensor | None = None) -> torch.Tensor:
        flat = self.weight if buffer is None else buffer
        mask, index = self._dense_places()
        out = torch.zeros(self.num_rows, self.d_max, dtype=flat.dtype, device=flat.device)
        out[mask] = flat.detach()[index]
        return out

    @_shared
    def load_dense(self, dense: torch.Tensor) -> None:
        """Writes the first width values of each row of ``dense`` [num_rows, d_max] into the weight, the
        inverse of to_dense; the layout and the optimizer state stay. Checks first: on an error nothing changes."""
        if not torch.is_tensor(dense) or not dense.is_floating_point():
            raise TypeError(f"expected a floating-point tensor of rows, got {type(dense).__name__}"
                            + (f" of {dense.dtype}" if torch.is_tensor(dense) else ""))
        if tuple(dense.shape) != (self.num_rows, self.d_max):
            raise ValueError(f"expected rows of shape ({self.num_rows}, {self.d_max}) (num_embeddings, "
                             f"embedding_dim), got {tuple(dense.shape)}")
        mask, index = self._dense_places()
        values = dense.detach().to(device=self.weight.device, dtype=self.weight.dtype)[mask]
        with torch.no_grad():
            self.weight[index] = values

    # ---- internals --------------------------------------------------------
    def _named_buffers(self):
        yield "weight", self.weight
        for i, s in enumerate(self.state):
            yield f"state[{i}]", s

    def _check_companions(self, companions) -> list:
        companions = list(companions)
        for i, c in enumerate(companions):
            if not isinstance(c, torch.Tensor):
                raise TypeError(f"companions[{i}] must be a torch.Tensor, got {type(c).__name__}")
            if c.dim() != 1 or c.numel() != self.capacity or not c.is_contiguous():
                raise ValueError(f"companions[{i}] must be 1-D, contiguous, with capacity="
                                 f"{self.capacity} elements; got shape {tuple(c.shape)}")
            if c.device != self.weight.device:
                raise ValueError(f"companions[{i}] must be on {self.weight.device}, got {c.device}")
        return companions

    def _replays_out_of_place(self) -> bool:
        """Whether plans replay with the CUDA mover, ordered steps into new buffers (a GPU table)."""
        return self.weight.device.type == "cuda"

    def _layout(self, operation: Callable, companions, counts_only_moves: bool = False) -> None:
        """One layout operation, top to bottom: the C++ arena works out the new layout and the plan that moves
        the rows; when the plan needs buffers allocated it holds the new metadata aside (stage), the replay
        allocates them (an error there leaves the table as it was), the arena commits, and the rows move."""
        self._arena.set_relayout_allocates(self._replays_out_of_place())
        plan = operation()
        self._arena.stage()
        try:
            self._apply(plan, [self.weight, *self.state, *companions])
        except BaseException:
            self._refresh()  # the metadata is as it was, but maybe in vectors the operation reallocated
            raise
        if plan.steps or not counts_only_moves:  # (a new budget moves nothing unless it compacts)
            self.relayouts += 1

    def _apply(self, plan, buffers) -> None:
        """Allocates what the plan needs, commits the arena, replays the plan: the one place data moves."""
        replay = CudaReplay() if self._replays_out_of_place() else CpuReplay(_cpu_buffer)
        prepared = replay.prepare(plan, buffers, self.row_state)
        self._arena.commit()
        replay.replay(plan, buffers, prepared, self.row_state)
        self._refresh()

    def _initial_values(self, widths: np.ndarray | None, count: int, uniform: int | None) -> torch.Tensor | None:
        """Row init for appended rows (`widths`, or `count` rows `uniform` wide), drawn before any metadata
        changes so a bad init changes nothing."""
        if self._row_init is None or count == 0:
            return None
        if uniform is None:
            total = int(widths.sum(dtype=np.int64))
        else:
            total = count * uniform
        values = self._row_init(total, self.weight.dtype, self.weight.device)
        if not isinstance(values, torch.Tensor) or values.dim() != 1 or values.numel() != total:
            raise ValueError(f"row_init must return a 1-D tensor of {total} elements, got "
                             f"{getattr(values, 'shape', type(values).__name__)}")
        return values

    def _write_new_rows(self, first: int, values: torch.Tensor) -> None:
        offsets = self.offsets[first:]
        widths = self.widths[first:].to(torch.int64)
        live = widths > 0
        offsets, widths = offsets[live], widths[live]
        if offsets.numel() == 0:
            return
        with torch.no_grad():
            if bool((offsets[1:] == offsets[:-1] + widths[:-1]).all()):
                start = int(offsets[0])
                self.weight.data[start:start + values.numel()] = values
            else:
                starts = torch.repeat_interleave(offsets - (torch.cumsum(widths, 0) - widths), widths)
                index = starts + torch.arange(values.numel(), device=starts.device)
                self.weight.data[index.to(self.weight.device)] = values
