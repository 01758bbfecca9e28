"""The per-segment trainer: size the tables with a policy, warm-start, train with BPR, early-stop, evaluate.

One `StreamTrainer` runs one size policy over one `Stream`. At segment t it
1. asks the policy for every user's and item's width (vocabulary = the segment's prefix of ids),
2. sets them on the ragged tables (`set_widths` on the rows it already has, `append` for new ids, which
   start at N(0, init_std)), then checks the bytes the tables really hold against the budget,
3. trains on the segment's training part (replay included) with BPR over the graph of all training data so
   far, for a bounded number of batches, early-stopping on validation and keeping the best state,
4. evaluates once on the test part and records one result row.
Its whole state (tables with optimizer state, RNGs, progress, rows) is `state_dict()`, so a run can be
checkpointed after any segment and resumed to the same numbers.
"""
from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import numpy as np
import torch

import pyscall
from ..arena import METADATA_BYTES_PER_ROW
from ..errors import BudgetExceededError as BudgetError  # the one budget exception, raised here too
from .metrics import ranking_metrics
from .models import MODELS, MF, LightGCN, NegativeSampler, bpr_loss, normalized_adjacency, propagate_together
from .scall.policies import PROBE_STARTS, SizeContext, SizePolicy

FLOAT32_BYTES = 4
PARAMS_PER_MB = 250_000  # the paper's megabytes of float32 parameters


@dataclass
class TrainConfig:
    model: str = "lightgcn"
    d_max: int = 64
    d_min: int = 1
    layers: int = 3               # LightGCN propagation layers
    # Scaled down from the paper (batch 10,000, evaluate every 200 batches, train to convergence) so that the
    # default run on the embedded stream (13 monthly segments) takes a few minutes on 2 cores: a LightGCN batch
    # costs one propagation over the whole graph whatever its size, so batches are large and few.
    batch_size: int = 8192
    max_batches: int = 200        # per segment: training always ends
    eval_every: int = 20          # batches between validation checks
    patience: int = 3             # validation checks without improvement before stopping
    lr: float = 0.03              # Adam, decayed x lr_decay every lr_decay_every batches, floored at lr_min
    lr_decay: float = 0.95
    lr_decay_every: int = 200
    lr_min: float = 1e-3
    l2: float = 1e-4
    init_std: float = 0.01        # new rows start at N(0, init_std)
    eval_users: Optional[int] = None  # evaluate a seeded sample of at most this many users (huge streams)
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {self.model!r}")
        if not 0 <= self.d_min <= self.d_max or self.d_max < 1:
            raise ValueError(f"need 0 <= d_min <= d_max and d_max >= 1, got {self.d_min}, {self.d_max}")
        if self.eval_users is not None and self.eval_users < 1:
            raise ValueError(f"eval_users must be >= 1 or None, got {self.eval_users}")
        for name in ("batch_size", "max_batches", "eval_every", "patience", "lr_decay_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def lr_at(self, batch: int) -> float:
        return max(self.lr_min, self.lr * self.lr_decay ** (batch // self.lr_decay_every))


@dataclass
class Budget:
    """The user and item tables' budget, in one of three units (None everywhere: no budget):
    - `megabytes`: MB of float32 parameters, the SCALL paper's unit: P = MB x 250,000 parameters. The tables
      hold more bytes than that (Adam's two moments per parameter, 16 bytes of metadata a row);
    - `memory_mb`: MB (10^6 bytes) of memory for everything the tables hold (weights, optimizer state, row
      metadata); P is the most parameters that fit with the rows' metadata;
    - `mean_size`: a mean width c per row, P = c x (n_users + n_items), growing with the vocabulary."""
    megabytes: Optional[float] = None
    mean_size: Optional[float] = None
    memory_mb: Optional[float] = None

    def __post_init__(self):
        given = [n for n in ("megabytes", "mean_size", "memory_mb") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give the budget in one unit, not both {' and '.join(given)}")
        for name in given:
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"budget {name} must be > 0, got {value}")

    @property
    def is_set(self) -> bool:
        return any(v is not None for v in (self.megabytes, self.mean_size, self.memory_mb))

    @property
    def memory_bytes(self) -> Optional[int]:
        return None if self.memory_mb is None else int(self.memory_mb * 1_000_000)

    def params(self, n_users: int, n_items: int, bytes_per_param: Optional[int] = None) -> Optional[int]:
        """P for this vocabulary; a memory budget needs the bytes the tables hold per parameter."""
        if self.megabytes is not None:
            return int(self.megabytes * PARAMS_PER_MB)
        if self.mean_size is not None:
            return int(self.mean_size * (n_users + n_items))
        if self.memory_mb is not None:
            if bytes_per_param is None:
                raise ValueError("a memory budget needs bytes_per_param to count parameters")
            left = self.memory_bytes - (n_users + n_items) * METADATA_BYTES_PER_ROW
            if left < 0:
                raise BudgetError(f"a memory budget of {self.memory_mb:g} MB ({self.memory_bytes} bytes) is less than the "
                                  f"metadata of {n_users} users + {n_items} items alone ({METADATA_BYTES_PER_ROW} "
                                  f"bytes a row: {(n_users + n_items) * METADATA_BYTES_PER_ROW} bytes)")
            return left // bytes_per_param
        return None

    def describe(self) -> str:
        if self.megabytes is not None:
            return f"{self.megabytes:g} MB of float32 parameters ({int(self.megabytes * PARAMS_PER_MB)} parameters)"
        if self.mean_size is not None:
            return f"mean size {self.mean_size:g}"
        if self.memory_mb is not None:
            return f"{self.memory_mb:g} MB of memory ({self.memory_bytes} bytes: weights, Adam state, row metadata)"
        return "none"


class StreamTrainer:
    """Runs `policy` over `stream.segments`; `run_segment()` does the next one and returns its result row."""

    def __init__(self, stream, policy: SizePolicy, config: TrainConfig, budget: Budget,
                 batch_progress: Optional[Callable[[int], object]] = None):
        if not policy.budgeted and budget.is_set:
            budget = Budget()  # "full" is the unbudgeted reference whatever budget the run was given
        if policy.budgeted and not budget.is_set:
            raise ValueError(f"policy {policy.name!r} needs a budget (megabytes, memory or mean size)")
        self.stream, self.policy, self.config, self.budget = stream, policy, config, budget
        self.batch_progress = batch_progress  # factory: total batches -> a tqdm-like bar (update/close)
        self.device = torch.device(config.device)
        self.next_segment = 0
        self.results: list[dict] = []
        self.users = self.items = None
        self.model = None
        self.generator = torch.Generator().manual_seed(config.seed)         # batches and negatives
        self.policy_rng = np.random.default_rng([config.seed, 1])             # random sizes
        self._bpe = None
        # The tables as they were before the latest segment's resize, kept for policies that replay it
        # (`policy.replays`: SCALL's replay probes re-run the previous deployment at other sizes).
        self.start = None

    @property
    def done(self) -> bool:
        return self.next_segment >= len(self.stream.segments)

    # -- sizes ---------------------------------------------------------------------------------
    def _new_table(self, widths: torch.Tensor, budget_bytes: Optional[int]):
        return pyscall.Embedding(len(widths), self.config.d_max, widths=widths, budget_bytes=budget_bytes,
                                 optimizer="adam", lr=self.config.lr, init_std=self.config.init_std,
                                 device=self.device)

    def _build_model(self):
        if self.config.model == "lightgcn":
            self.model = LightGCN(self.users, self.items, self.config.layers)
        else:
            self.model = MF(self.users, self.items)

    def _resize(self, table, widths: torch.Tensor, budget_bytes: Optional[int]):
        # Rows it has get their new width first, then new ids are appended at theirs: the table never holds
        # more than its final size, which fits the budget.
        table.budget_bytes = budget_bytes
        n_old = table.num_embeddings
        table.set_widths(widths[:n_old])
        if len(widths) > n_old:
            table.append(widths[n_old:])
        stats = table.memory_stats()
        if stats["capacity_bytes"] > stats["used_bytes"]:
            table.compact()

    def _bytes_per_param(self) -> int:
        """Bytes the arena holds per parameter (weight plus fused Adam state), measured on a 1-row table."""
        if self._bpe is None:
            self._bpe = int(self._new_table(torch.ones(1, dtype=torch.int32), None)
                            .memory_stats()["bytes_per_element"])
        return self._bpe

    def held_bytes(self) -> int:
        """What the tables hold: value and optimizer-state buffers and the rows' metadata, as the budget counts."""
        return sum(s["capacity_bytes"] + s["row_metadata_bytes"]
                   for s in (t.memory_stats() for t in (self.users, self.items)))

    def budget_for(self, seg) -> tuple[Optional[int], Optional[int]]:
        """(parameters P, bytes) the budget allows at `seg`. In parameter units the bytes are P's weights with
        their Adam state plus each row's metadata; a memory budget is its bytes, and P what fits in them."""
        n_rows = seg.n_users + seg.n_items
        params = self.budget.params(seg.n_users, seg.n_items, self._bytes_per_param())
        if params is None:
            return None, None
        if self.budget.memory_bytes is not None:
            return params, self.budget.memory_bytes
        return params, params * self._bytes_per_param() + n_rows * METADATA_BYTES_PER_ROW

    def _apply_sizes(self, seg) -> tuple[int, Optional[int], Optional[int]]:
        """Set every row's width for `seg`; returns (parameters used, parameter budget, byte budget)."""
        cfg = self.config
        budget, budget_bytes = self.budget_for(seg)
        previous = self.stream.segments[seg.index - 1] if seg.index > 0 and self.users is not None else None
        ctx = SizeContext(seg.index, seg.user_frequency(), seg.item_frequency(), budget, cfg.d_min, cfg.d_max,
                          self.policy_rng, segment=seg, previous=previous, trainer=self)
        user_w, item_w = (w.to(torch.int32) for w in self.policy.sizes(ctx))
        if user_w.shape != (seg.n_users,) or item_w.shape != (seg.n_items,):
            raise ValueError(f"policy {self.policy.name!r} returned {tuple(user_w.shape)} user and "
                             f"{tuple(item_w.shape)} item widths for {seg.n_users} users and {seg.n_items} items")
        used = int(user_w.sum()) + int(item_w.sum())
        if budget is not None and used > budget:
            in_bytes = f", what {budget_bytes} bytes hold" if self.budget.memory_bytes is not None else ""
            raise BudgetError(f"segment {seg.index}: policy {self.policy.name!r} asks for {used} parameters, "
                              f"over the budget of {budget}{in_bytes} ({seg.n_users} users + {seg.n_items} items at "
                              f"d_min={cfg.d_min}); raise the budget or lower d_min")
        if getattr(self.policy, "replays", False) and self.users is not None:
            self.start = tuple(_unbudgeted_copy(t) for t in (self.users, self.items))
        if self.users is None:
            self.users = self._new_table(user_w, budget_bytes)
            self.items = self._new_table(item_w, budget_bytes)
            self._build_model()
        else:
            self._resize(self.users, user_w, budget_bytes)
            self._resize(self.items, item_w, budget_bytes)
        held = self.held_bytes()
        if budget_bytes is not None and held > budget_bytes:
            raise BudgetError(f"segment {seg.index}: the user and item tables hold {held} bytes, over the "
                              f"budget of {budget_bytes} bytes ({budget} parameters x {self._bytes_per_param()} "
                              f"bytes and {METADATA_BYTES_PER_ROW} bytes of metadata a row)")
        return used, budget, budget_bytes

    # -- training ------------------------------------------------------------------------------
    def _scoring_part(self, seg) -> str:
        # protocol "paper" has no validation part: the test part early-stops and rewards (leaky, as the paper)
        return "valid" if len(seg.valid) else "test"

    def eval_set(self, seg, part: str):
        """`seg.evaluation(part)` limited to at most `eval_users` users, sampled with their own seed (so the
        sample does not move the training RNGs)."""
        ev = seg.evaluation(part)
        users = np.unique(ev.pairs[:, 0]) if ev.users is None else ev.users
        if self.config.eval_users is None or len(users) <= self.config.eval_users:
            return ev
        rng = np.random.default_rng([self.config.seed, 2, seg.index])
        keep = np.sort(rng.choice(users, self.config.eval_users, replace=False))
        return ev._replace(pairs=ev.pairs[np.isin(ev.pairs[:, 0], keep)],
                           users=None if ev.users is None else keep)

    def fitness(self, model, ev, n_items: int, ks=(20,)) -> dict:
        return ranking_metrics(model.scorer(), ev.pairs, ev.mask, n_items, ks=ks, candidates=ev.candidates,
                               users=ev.users)

    def _snapshot(self):
        return {k: v.clone() for k, v in self.users.state_dict().items()}, \
            {k: v.clone() for k, v in self.items.state_dict().items()}

    def _train(self, seg) -> dict:
        cfg = self.config
        train = torch.from_numpy(np.asarray(seg.train, dtype=np.int64).reshape(-1, 2))
        known = seg.training_pairs()
        if cfg.model == "lightgcn":
            self.model.set_graph(known)
        check = self.eval_set(seg, self._scoring_part(seg))
        sampler = NegativeSampler(known, seg.n_items)
        info = {"batches": 0, "best_batch": 0, "valid_fitness": float("nan")}
        if len(train) == 0:
            return info
        best, best_fit, bad = None, -1.0, 0
        bar = self.batch_progress(cfg.max_batches) if self.batch_progress else None
        batches = _batch_indices(len(train), cfg.batch_size, self.generator)
        for b in range(cfg.max_batches):
            idx = next(batches)
            neg = sampler.sample(train[idx, 0], self.generator)
            bpr_step(self.model, (self.users, self.items), train[idx, 0], train[idx, 1], neg, cfg.lr_at(b), cfg.l2,
                     self.device)
            info["batches"] = b + 1
            if bar is not None:
                bar.update(1)
            if len(check.pairs) and ((b + 1) % cfg.eval_every == 0 or b + 1 == cfg.max_batches):
                fit = _fitness(self.fitness(self.model, check, seg.n_items))
                if fit > best_fit:
                    best, best_fit, bad = self._snapshot(), fit, 0
                    info["best_batch"] = b + 1
                else:
                    bad += 1
                    if bad >= cfg.patience:
                        break
        if bar is not None:
            bar.close()
        if best is not None and info["best_batch"] != info["batches"]:
            self.users.load_state_dict(best[0])
            self.items.load_state_dict(best[1])
        info["valid_fitness"] = best_fit if best is not None else float("nan")
        return info

    def prober(self, seg, batches: int, start: str = "warm") -> "Prober":
        """Short trainings at other sizes on `seg` (the agent's reward probes); see `Prober`."""
        return Prober(self, seg, batches, start)

    # -- one segment -----------------------------------------------------------------------------
    def run_segment(self) -> dict:
        if self.done:
            raise RuntimeError("every segment has been run")
        seg = self.stream.segments[self.next_segment]
        start = time.perf_counter()
        used, budget, budget_bytes = self._apply_sizes(seg)
        held = self.held_bytes()
        sized = time.perf_counter()
        info = self._train(seg)
        trained = time.perf_counter()
        metrics = self.fitness(self.model, self.eval_set(seg, "test"), seg.n_items, ks=(5, 10, 20))
        row = {"policy": self.policy.name, "model": self.config.model, "segment": seg.index,
               "n_users": seg.n_users, "n_items": seg.n_items, "n_train": len(seg.train),
               **{k: float(v) for k, v in metrics.items() if k != "n_users"},
               "eval_users": int(metrics["n_users"]),
               "params": used, "budget_params": budget, "bytes": held, "budget_bytes": budget_bytes,
               "mean_width": used / max(1, seg.n_users + seg.n_items),
               "batches": info["batches"], "best_batch": info["best_batch"],
               "valid_fitness": info["valid_fitness"], "search_s": sized - start, "train_s": trained - sized,
               **getattr(self.policy, "last_search", {}), "wall_s": time.perf_counter() - start}
        self.results.append(row)
        self.next_segment += 1
        return row

    def tables(self):
        """(user table, item table): the deployed model's rows."""
        return self.users, self.items

    def widths(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.users.widths, self.items.widths

    # -- checkpoint state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "policy": self.policy.name,
            "config": asdict(self.config),
            "next_segment": self.next_segment,
            "results": [dict(r) for r in self.results],
            "users": self.users.state_dict() if self.users is not None else None,
            "items": self.items.state_dict() if self.items is not None else None,
            "policy_state": self.policy.state_dict(),
            "start": None if self.start is None else [t.state_dict() for t in self.start],
            "rng": {"generator": self.generator.get_state(),
                    "policy": self.policy_rng.bit_generator.state,
                    "torch": torch.get_rng_state(),
                    "numpy": _numpy_global_state(),
                    "python": random.getstate(),
                    # appended rows draw their init on the table's device
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["policy"] != self.policy.name:
            raise ValueError(f"checkpoint is for policy {state['policy']!r}, this run is {self.policy.name!r}")
        if state["config"] != asdict(self.config):
            changed = sorted(k for k in state["config"] if state["config"][k] != asdict(self.config).get(k))
            raise ValueError(f"checkpoint was written with other settings ({', '.join(changed)}); "
                             "resume with the same options or start a new output folder")
        self.policy.load_state_dict(state.get("policy_state", {}))  # checkpoints before the agent have none
        if state["users"] is not None:
            seg = self.stream.segments[state["next_segment"] - 1]
            budget_bytes = self.budget_for(seg)[1]
            self.users = self._new_table(state["users"]["widths"], budget_bytes)
            self.items = self._new_table(state["items"]["widths"], budget_bytes)
            self.users.load_state_dict(state["users"])
            self.items.load_state_dict(state["items"])
            self._build_model()
        self.start = None
        if state.get("start") is not None:  # checkpoints before replay probes have none
            self.start = tuple(self._new_table(sd["widths"], None) for sd in state["start"])
            for table, sd in zip(self.start, state["start"]):
                table.load_state_dict(sd)
        self.next_segment = state["next_segment"]
        self.results = [dict(r) for r in state["results"]]
        rng = state["rng"]
        self.generator.set_state(rng["generator"])
        self.policy_rng.bit_generator.state = rng["policy"]
        torch.set_rng_state(rng["torch"])
        _set_numpy_global_state(rng["numpy"])
        random.setstate(_tuples(rng["python"]))
        if rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.device)


def _fitness(metrics: dict) -> float:
    """SCALL's fitness: (Recall@20 + NDCG@20) / 2."""
    return 0.5 * (metrics["recall@20"] + metrics["ndcg@20"])


def _batch_indices(n: int, batch_size: int, generator: torch.Generator):
    """Batches of row indices, endlessly: a new random order of the n rows each epoch. Lazy, so the caller's
    draws from the same generator (negatives) interleave with the permutations in a fixed order."""
    while True:
        order = torch.randperm(n, generator=generator)
        for pos in range(0, n, batch_size):
            yield order[pos: pos + batch_size]


def bpr_step(model, tables, users, pos, neg, lr: float, l2: float, device) -> None:
    """One BPR batch; the tables' fused Adam updates the touched rows during backward."""
    for table in tables:
        table.lr = lr
    pos_s, neg_s, ego = model.batch(users.to(device), pos.to(device), neg.to(device))
    bpr_loss(pos_s, neg_s, ego, l2).backward()


class Prober:
    """Short trainings of the base model at other sizes on one segment, scored as the deployed model is
    early-stopped (validation; the test part under protocol "paper"): SCALL's reward probes.

    Every probe of one `Prober` trains on the same pre-drawn batches and negatives, over one graph built
    once, so rewards differ by the sizes alone. Where a probe starts (`start`):
    - "replay": the tables as they were before `seg` was deployed (`trainer.start`), resized to the probe's
      sizes as deployment resized them, so a probe re-runs that deployment at other sizes; "warm" where there
      is no such start (the first segment was trained from scratch);
    - "warm": the current tables, already trained on `seg`, cut or zero-padded to the probe's sizes;
    - "fresh": a new model at the probe's sizes (the paper code's probe).
    """

    def __init__(self, trainer: StreamTrainer, seg, batches: int, start: str = "warm"):
        cfg = trainer.config
        if batches < 1:
            raise ValueError(f"probe batches must be >= 1, got {batches}")
        if start not in PROBE_STARTS:
            raise ValueError(f"probe start must be one of {PROBE_STARTS}, got {start!r}")
        if start == "replay" and trainer.start is None:
            start = "warm"
        self.trainer, self.seg, self.start = trainer, seg, start
        self.eval = trainer.eval_set(seg, trainer._scoring_part(seg))
        known = seg.training_pairs()
        self.graph = normalized_adjacency(known, seg.n_users, seg.n_items, device=trainer.device) \
            if cfg.model == "lightgcn" else None
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, 3, seg.index])
                                                      .generate_state(1)[0]))
        train = torch.from_numpy(np.asarray(seg.train, dtype=np.int64).reshape(-1, 2))
        sampler = NegativeSampler(known, seg.n_items)
        self.batches = []
        indices = _batch_indices(len(train), cfg.batch_size, generator)
        for _ in range(batches if len(train) else 0):
            idx = next(indices)
            self.batches.append((train[idx, 0], train[idx, 1], sampler.sample(train[idx, 0], generator)))
        self.budget = trainer.budget_for(seg)[0]

    def _tables(self, user_widths, item_widths):
        t = self.trainer
        # every probe draws its new rows' init from the same RNG state, and the run's RNG stays where it was
        with torch.random.fork_rng(devices=[] if t.device.type == "cpu" else [t.device]):
            if self.start == "fresh":
                return t._new_table(user_widths, None), t._new_table(item_widths, None)
            if self.start == "replay":
                out = tuple(copy.deepcopy(table) for table in t.start)
                for table, widths in zip(out, (user_widths, item_widths)):
                    t._resize(table, widths, None)
                return out
            out = tuple(_unbudgeted_copy(table) for table in (t.users, t.items))
            for table, widths in zip(out, (user_widths, item_widths)):
                table.set_widths(widths[:table.num_embeddings])
            return out

    def fitness(self, user_widths: torch.Tensor, item_widths: torch.Tensor) -> float:
        """(Recall@20 + NDCG@20) / 2 after training a probe at these widths on the pre-drawn batches."""
        return self.fitness_many([(user_widths, item_widths)])[0]

    def fitness_many(self, sizes: list) -> list[float]:
        """`fitness` of several probes [(user widths, item widths), ...] trained side by side: one backward per
        batch for all, and for LightGCN one sparse product per layer (`propagate_together`). Each probe's
        rows get exactly its own gradients, so each result is what `fitness` alone gives."""
        t = self.trainer
        cfg = t.config
        tables = [self._tables(u, i) for u, i in sizes]
        models = [self._model(u, i) for u, i in tables]
        for b, (u, p, n) in enumerate(self.batches):
            for pair in tables:
                for table in pair:
                    table.lr = cfg.lr_at(b)
            u, p, n = u.to(t.device), p.to(t.device), n.to(t.device)
            together = propagate_together(models) if self.graph is not None else [None] * len(models)
            loss = sum(bpr_loss(*m.batch(u, p, n, g), cfg.l2) for m, g in zip(models, together))
            loss.backward()  # fused Adam: each probe's tables update their own rows
        if not len(self.eval.pairs):
            return [0.0] * len(models)
        return [_fitness(t.fitness(m, self.eval, self.seg.n_items)) for m in models]

    def _model(self, users, items):
        if self.graph is None:
            return MF(users, items)
        model = LightGCN(users, items, self.trainer.config.layers)
        model.graph = self.graph  # built once for every probe
        return model

    def current_fitness(self) -> float:
        """The fitness of the deployed model as it is (no probe training): the paper's reward reference."""
        t = self.trainer
        model = self._model(t.users, t.items)
        return _fitness(t.fitness(model, self.eval, self.seg.n_items)) if len(self.eval.pairs) else 0.0


def _unbudgeted_copy(table):
    out = copy.deepcopy(table)
    out.budget_bytes = None
    return out


def _numpy_global_state():
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]


def _set_numpy_global_state(state) -> None:
    kind, keys, pos, has_gauss, gauss = state
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _tuples(value):
    # python's random state is nested tuples; keep it so whatever the serialiser did to them.
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
