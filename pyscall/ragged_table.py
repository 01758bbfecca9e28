"""RaggedTable: what `pyscall.Embedding` and `pyscall.EmbeddingBag` share: the arena (`pyscall.arena.RaggedArena`),
its construction from torch's keywords, device moves, the layout methods and the ragged state dict.

Where a width changes: `RaggedTable.resize / set_widths / append / release / compact`, each one call of the arena's
method under the table's lock, with a torch optimizer's state and weight.grad moving along in drop-in mode
(pyscall.dropin)."""
from __future__ import annotations

import math
import numbers
import weakref
from typing import Optional

import torch
from torch import Tensor, nn

from . import dropin, ops
from .arena import RaggedArena, check_budget_bytes, memory_ceiling
from .dropin import OptimizerArg
from .errors import InputDtypeError, PaddingIdxError
from .spec import OPTIMIZERS, table_dtypes

# torch.nn.Embedding / EmbeddingBag keywords pyscall does not implement, with torch's defaults:
# passing the default is harmless, anything else raises instead of being ignored.
_UNSUPPORTED_TORCH_KEYWORDS = {"max_norm": None, "norm_type": 2.0, "scale_grad_by_freq": False,
                               "_weight": None, "_freeze": False}


def _check_int(name: str, value, low: int) -> int:
    """An int (not a bool, float or tensor) >= low, else TypeError / ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_hparam(name: str, value, low: float = 0.0, high: Optional[float] = None) -> float:
    """A finite real number in [low, high) (high: exclusive), as torch.optim checks its hyper-parameters."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low} and finite"
        raise ValueError(f"Invalid {name}: {value} (must be {bound})")
    return value


class RaggedTable(nn.Module):
    """What `Embedding` and `EmbeddingBag` share: the arena, the layout methods, the state dict."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: Optional[int] = None, *,
                 widths=None, budget_bytes: Optional[int] = None, optimizer: Optional[str] = None,
                 lr: Optional[float] = None, betas=(0.9, 0.999), eps: Optional[float] = None,
                 weight_decay: float = 0.0, init_std: Optional[float] = None, sparse: bool = False,
                 device=None, dtype=None, **torch_keywords):
        super().__init__()
        for key, value in torch_keywords.items():
            if key not in _UNSUPPORTED_TORCH_KEYWORDS:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {key!r}")
            if value != _UNSUPPORTED_TORCH_KEYWORDS[key]:
                raise NotImplementedError(f"pyscall.{type(self).__name__} does not support {key}={value!r}")
        num_embeddings = _check_int("num_embeddings", num_embeddings, 0)
        embedding_dim = _check_int("embedding_dim", embedding_dim, 0)  # 0 as torch: rows 0 wide
        budget_bytes = check_budget_bytes(budget_bytes)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
                raise TypeError(f"padding_idx must be None or an int, got {type(padding_idx).__name__} "
                                f"{padding_idx!r}")
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise PaddingIdxError("padding_idx must be within num_embeddings")
            padding_idx = int(padding_idx) % num_embeddings
        if optimizer is not None and optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be None or one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        if sparse and optimizer is not None:
            raise ValueError(f"sparse=True is for drop-in mode (a sparse weight.grad for a torch optimizer); the "
                             f"fused optimizer {optimizer!r} leaves no gradient")
        if init_std is not None:
            init_std = _check_hparam("init_std", init_std)
        spec = OPTIMIZERS[optimizer] if optimizer is not None else None
        # Checked before the table is built: a bad hyper-parameter allocates nothing.
        hparams = self._check_hparams((spec.lr if spec else 0.0) if lr is None else lr,
                                      (spec.eps if spec else 0.0) if eps is None else eps, betas, weight_decay)
        dtype = dtype or torch.get_default_dtype()
        device = torch.device(device) if device is not None else torch.device("cpu")
        if dtype not in table_dtypes(device, fused=spec is not None):  # what the kernels there read and update
            raise TypeError(f"a pyscall table on {device.type}{' with a fused optimizer' if spec else ''} holds "
                            f"{' or '.join(map(str, table_dtypes(device, spec is not None)))}, got dtype={dtype}")
        self.padding_idx = padding_idx
        self.optimizer = optimizer
        self.sparse = bool(sparse)
        self.init_std = init_std
        self._arena = RaggedArena(num_embeddings, embedding_dim, widths, dtype=dtype, device=device,
                                  state_per_element=spec.state_per_element if spec else 0,
                                  state_per_row=spec.state_per_row if spec else 0, state_dtype=dtype,
                                  budget_bytes=budget_bytes, row_init=self._row_init)
        if padding_idx is not None:
            self._zero_row(padding_idx)
        # The flat buffer itself; the arena swaps its storage on reallocation, so this stays the same object.
        self.weight = nn.Parameter(self._arena.weight, requires_grad=True)
        self._bind_weight()
        self.register_buffer("_hparams", torch.tensor(hparams, dtype=torch.float64), persistent=False)
        self.register_buffer("_step", torch.zeros(1, dtype=torch.int64), persistent=False)
        self._layout_version = 0
        self._aligned = weakref.WeakKeyDictionary()  # torch optimizer -> layout version its state matches

    @staticmethod
    def _check_hparams(lr, eps, betas, weight_decay) -> list:
        """[lr, eps, beta1, beta2, weight_decay], each checked as torch.optim checks it (NaN and negatives refused)."""
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        return [_check_hparam("learning rate", lr), _check_hparam("epsilon value", eps),
                _check_hparam("beta parameter at index 0", betas[0], 0.0, 1.0),
                _check_hparam("beta parameter at index 1", betas[1], 0.0, 1.0),
                _check_hparam("weight_decay value", weight_decay)]

    def _bind_weight(self) -> None:
        # The arena moves rows in this Parameter itself; the optimizer step hook finds the table from it.
        self._arena.weight = self.weight
        dropin.bind(self)

    # -- pickling and copy.deepcopy ----------------------------------------------------------------
    # The arena pickles its exact layout, so values, fused optimizer state and a torch optimizer's state
    # copied along (copy.deepcopy((model, opt))) stay aligned; what cannot be pickled is rebuilt.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_aligned"]  # weak references; a copied optimizer's state matches the copied layout
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._aligned = weakref.WeakKeyDictionary()
        self._bind_weight()

    # -- Module.to / cuda / cpu / share_memory ----------------------------------------------------
    def _apply(self, fn, recurse=True):
        # The fused optimizer state and the row metadata live in the arena, not in registered buffers:
        # they follow the weight to its new device. The dtype stays: budget_bytes counts its bytes.
        weight = self._arena.weight
        target = fn(torch.empty(0, dtype=weight.dtype, device=weight.device))
        if target.dtype != weight.dtype:
            raise TypeError(f"a pyscall table keeps the dtype it was built with ({weight.dtype}), which its "
                            f"budget counts; build it with dtype={target.dtype} instead")
        with self._arena.lock.exclusive():  # every buffer changes storage: no kernel may run meanwhile
            super()._apply(fn, recurse)
            self._bind_weight()  # the same Parameter unless torch made a new one for the converted data
            a = self._arena
            a.state = [fn(t) for t in a.state]
            a.row_state = [fn(t) for t in a.row_state]
            a._config["device"] = self.weight.device
            a._arena.set_memory_limit(memory_ceiling(self.weight.device))  # the new device's memory bounds it
            a._refresh()
        return self

    # -- initialisation ------------------------------------------------------------------------
    def _row_init(self, numel: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        values = torch.empty(numel, dtype=dtype, device=device)
        return values.normal_(0.0, 1.0 if self.init_std is None else self.init_std)

    def reset_parameters(self) -> None:
        """As torch's: every stored value drawn again from the row init (N(0, 1), or N(0, init_std)) and the
        padding row zeroed. The layout and any optimizer state stay."""
        with self._arena.lock.shared():
            index = self._arena._packed_index()
            with torch.no_grad():
                self.weight[index] = self._row_init(index.numel(), self.weight.dtype, self.weight.device)
            if self.padding_idx is not None:
                self._zero_row(self.padding_idx)

    def _zero_row(self, row: int) -> None:
        off, width = int(self._arena.offsets[row]), int(self._arena.widths[row])
        self._arena.weight.data[off: off + width] = 0

    # -- attributes of the contract --------------------------------------------------------------
    @property
    def num_embeddings(self) -> int:
        return self._arena.num_rows

    @property
    def embedding_dim(self) -> int:
        return self._arena.d_max

    @property
    def widths(self) -> Tensor:
        with self._arena.lock.shared():  # the view reads C++ memory that a re-layout may free
            return self._arena.widths.clone()

    @property
    def budget_bytes(self) -> Optional[int]:
        return self._arena.budget_bytes

    @budget_bytes.setter
    def budget_bytes(self, value: Optional[int]) -> None:
        self.set_budget(value)

    def set_budget(self, budget_bytes: Optional[int], *, optimizer: OptimizerArg = None) -> None:
        """A new budget (None: unbounded), as `emb.budget_bytes = ...`. When only the free space is over it the
        table compacts first: in drop-in mode pass the torch optimizer(s) so that their state moves with the rows."""
        self._relayout(RaggedArena.set_budget, budget_bytes, optimizer=optimizer)

    @property
    def lr(self) -> float:
        return float(self._hparams[0])

    @lr.setter
    def lr(self, value: float) -> None:
        self._hparams[0] = _check_hparam("learning rate", value)

    @property
    def step(self) -> int:
        """Fused optimizer steps taken so far."""
        return int(self._step)

    def memory_stats(self) -> dict:
        return self._arena.memory_stats()

    def to_dense(self) -> Tensor:
        return self._arena.to_dense()

    @classmethod
    def from_pretrained(cls, embeddings: Tensor, freeze: bool = True, **kwargs):
        """As torch's `from_pretrained`: a table whose rows start as the rows of `embeddings`
        [num_embeddings, embedding_dim] (dtype and device from it unless given; integer rows become the default
        float dtype). With `widths`, each row keeps
        its first widths[i] values, as a shrink does. `freeze=True` (torch's default) leaves the weight without
        gradient, so it cannot go with a fused optimizer. Other keywords go to the constructor."""
        if not torch.is_tensor(embeddings) or embeddings.dim() != 2:
            raise ValueError("Embeddings parameter is expected to be 2-dimensional")
        if freeze and kwargs.get("optimizer") is not None:
            raise ValueError(f"freeze=True leaves the table untrained; the fused optimizer "
                             f"{kwargs['optimizer']!r} needs freeze=False")
        if not embeddings.is_floating_point() and not embeddings.is_complex():
            # The kernels read floats only: integer (or bool) rows become the default float dtype, values kept
            # (exactly up to 2**24 in float32). torch's Embedding keeps the integer dtype; its EmbeddingBag refuses.
            embeddings = embeddings.to(kwargs.get("dtype") or torch.get_default_dtype())
        kwargs.setdefault("dtype", embeddings.dtype)
        kwargs.setdefault("device", embeddings.device)
        table = cls(*embeddings.shape, **kwargs)
        table._arena.load_dense(embeddings)
        table.weight.requires_grad_(not freeze)
        return table

    def extra_repr(self) -> str:
        stats = self._arena.memory_stats()
        text = (f"{self.num_embeddings}, {self.embedding_dim}, mean_width="
                f"{stats['total_width'] / max(1, stats['num_rows']):.2f}")
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.optimizer:
            text += f", optimizer={self.optimizer!r}"
        if self.sparse:
            text += ", sparse=True"
        if stats["budget_bytes"] is not None:
            text += f", budget_bytes={stats['budget_bytes']}"
        return text

    # -- layout changes ----------------------------------------------------------------------------
    def _relayout(self, operation, *args, optimizer: OptimizerArg = None):
        """Runs the RaggedArena layout method `operation` (e.g. RaggedArena.resize) under the table's lock, moving
        the torch optimizers' state and weight.grad with the rows."""
        optimizers = dropin.as_optimizers(optimizer)
        if optimizers and self.optimizer is not None:
            raise ValueError("optimizer= is for drop-in mode; this table's optimizer is fused "
                             f"({self.optimizer!r}) and its state moves with the rows by itself")
        with self._arena.lock.exclusive():
            arena = self._arena  # read under the lock: load_state_dict may have replaced it meanwhile
            grads, presence = dropin.grad_companions(self)
            relayouts = arena.relayouts
            result = operation.unlocked(arena, *args, companions=dropin.optimizer_companions(self, optimizers) + grads)
            if arena.relayouts != relayouts:  # (set_budget moves nothing unless it compacts)
                self._layout_version += 1
                dropin.set_moved_grad(self, grads, presence)
        for opt in optimizers:
            self._aligned[opt] = self._layout_version
        return result

    def resize(self, ids, widths, *, optimizer: OptimizerArg = None) -> None:
        """Set the width of rows `ids` (batched, all-or-nothing; the last entry of a repeated id wins).

        Shrinking keeps the first values, growing keeps every value and adds zeros (and zero
        optimizer state). In drop-in mode pass the torch optimizer(s) training `weight` so their
        per-element state moves with the rows.
        """
        self._relayout(RaggedArena.resize, ids, widths, optimizer=optimizer)

    def set_widths(self, widths, *, optimizer: OptimizerArg = None) -> None:
        """Set every row's width at once (the SCALL step); the table is re-laid out compactly."""
        self._relayout(RaggedArena.set_widths, widths, optimizer=optimizer)

    def append(self, widths, *, optimizer: OptimizerArg = None):
        """Add rows with the given widths (int: one row); returns the new id(s). New rows get the row init."""
        new_ids = self._relayout(RaggedArena.append, widths, optimizer=optimizer)
        return int(new_ids[0]) if isinstance(widths, int) else new_ids

    def release(self, ids, *, optimizer: OptimizerArg = None) -> None:
        """Free the storage of rows `ids` (their width becomes 0; the ids stay valid)."""
        self._relayout(RaggedArena.release, ids, optimizer=optimizer)

    def compact(self, *, optimizer: OptimizerArg = None) -> None:
        """Defragment in place and trim the buffers to the bytes in use."""
        self._relayout(RaggedArena.compact, optimizer=optimizer)

    # -- forward plumbing ----------------------------------------------------------------------
    def _ids(self, input: Tensor, weight: Tensor) -> Tensor:
        if not torch.is_tensor(input):
            raise TypeError(f"input must be a tensor of indices, got {type(input).__name__}")
        if input.dtype not in (torch.int64, torch.int32):
            raise InputDtypeError("Expected tensor for argument #1 'indices' to have one of the following scalar "
                            f"types: Long, Int; but got {input.dtype} instead")
        if not (input.is_cpu and weight.is_cpu) and input.device != weight.device:
            raise ValueError(f"indices are on {input.device}, the table is on {weight.device}")
        if input.dim() == 1 and input.dtype == torch.int64 and input.is_contiguous():
            return input  # the usual batch, as it is
        return input.reshape(-1).to(torch.int64).contiguous()

    def _bundles(self) -> tuple[ops.Table, ops.Fused]:
        """What the ops take about this table. Read from the Module's dicts, as Module.__getattr__ would: it costs
        about 0.7 us a name."""
        a = self._arena
        buffers = self._buffers
        return (ops.Table(self._parameters["weight"], a.offsets, a.widths, a.uniform_width),
                ops.Fused(a.state, a.row_state, buffers["_step"], buffers["_hparams"], self.optimizer or ""))

    # -- ragged state dict -----------------------------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        # Compact form: values packed in row order, no n x d_max padding and no free space.
        with self._arena.lock.shared():  # one consistent layout, even while another thread re-lays it out
            a = self._arena
            index = a._packed_index()
            destination[prefix + "widths"] = a.widths.clone()
            destination[prefix + "values"] = a.weight.detach()[index].clone()
            for k, buf in enumerate(a.state):
                destination[prefix + f"state.{k}"] = buf[index].clone()
            for k, buf in enumerate(a.row_state):
                destination[prefix + f"row_state.{k}"] = buf.clone()
            if self.optimizer is not None:
                destination[prefix + "step"] = self._step.clone()

    _load_options = None  # (strict, match_rows) while this table's own load_state_dict runs

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False, *, match_rows: bool = True):
        """As torch's, all-or-nothing for this table: every check (keys, row count, shapes, dtypes, step, budget)
        runs before anything changes. strict=False ignores keys the table does not have. A checkpoint of another
        row count is refused (as torch refuses a size mismatch) unless match_rows=False: then the table takes the
        checkpoint's rows. Loaded as part of a larger module, the table is strict about its own keys whatever
        `strict` says (torch does not tell a submodule): it reports them and stays unchanged."""
        self._load_options = (bool(strict), bool(match_rows))
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        finally:
            del self._load_options

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # torch passes strict=True to every submodule whatever the caller asked: the caller's own comes from
        # load_state_dict above when it was called on this table.
        strict, match_rows = self._load_options or (True, True)
        mine = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if mine.keys() == {"weight"} and torch.is_tensor(mine["weight"]) and mine["weight"].dim() == 2:
            # A torch.nn.Embedding / EmbeddingBag checkpoint: its rows, cut to this table's widths.
            try:
                self._arena.load_dense(mine["weight"])
            except (TypeError, ValueError) as e:
                error_msgs.append(f"while copying {prefix}weight: {e}")
            return
        a = self._arena
        expected = {"widths", "values"} | {f"state.{k}" for k in range(len(a.state))} \
            | {f"row_state.{k}" for k in range(len(a.row_state))} \
            | ({"step"} if self.optimizer is not None else set())
        missing, unexpected = expected - mine.keys(), mine.keys() - expected
        missing_keys.extend(prefix + k for k in sorted(missing))
        unexpected_keys.extend(prefix + k for k in sorted(unexpected))
        if missing or (strict and unexpected):
            return  # torch raises for these once every module has been read; nothing here has changed
        widths = mine["widths"]
        if match_rows and torch.is_tensor(widths) and widths.dim() == 1 and widths.numel() != self.num_embeddings:
            error_msgs.append(f"size mismatch for {prefix}widths: the checkpoint has {widths.numel()} rows, the table "
                              f"has {self.num_embeddings}; table.load_state_dict(state_dict, match_rows=False) takes "
                              f"the checkpoint's rows")
            return
        step = self._checked_step(mine.get("step"), prefix) if self.optimizer is not None else None
        with a.lock.exclusive():
            a = self._arena
            # Builds a new arena first: on any error (budget, shapes, dtypes) this table is unchanged.
            self._arena = a.restored(widths, mine["values"], [mine[f"state.{k}"] for k in range(len(a.state))],
                                     [mine[f"row_state.{k}"] for k in range(len(a.row_state))], weight=self.weight)
            self.weight.grad = None  # a gradient of the old rows means nothing for the loaded ones
            if step is not None:
                self._step.fill_(step)
            self._layout_version += 1

    @staticmethod
    def _checked_step(step, prefix: str) -> int:
        """The fused optimizer's step count from a checkpoint: an integer tensor of shape (1,), >= 0."""
        if not torch.is_tensor(step) or step.shape != (1,) or step.dtype == torch.bool \
                or step.is_floating_point() or step.is_complex():
            got = f"{step.dtype} of shape {tuple(step.shape)}" if torch.is_tensor(step) else type(step).__name__
            raise ValueError(f"{prefix}step must be an integer tensor of shape (1,) (the fused optimizer's step "
                             f"count), got {got}")
        count = int(step[0])
        if count < 0:
            raise ValueError(f"{prefix}step must be >= 0, got {count}")
        return count
