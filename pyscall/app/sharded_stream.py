"""`pyscall stream --nproc N` (or `torchrun --nproc-per-node N -m pyscall.app.cli stream ...`): the stream with its
user and item tables sharded over N gloo processes.

Every rank runs the same trainer on the same data and draws the same batches and negatives (same seed); each
trains on its contiguous slice of every batch, so the tables see the whole batch once. Metrics are computed on
rank 0 from the gathered rows and broadcast. Rank 0 writes the outputs; the others write to a scratch folder.
New rows start at the values the 1-process run draws for them, so both runs train the same model (their sums
of gradients differ in the order of additions only).
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile

import torch
import torch.distributed as dist
from torch import nn

from ..arena import METADATA_BYTES_PER_ROW
from .train import StreamTrainer
from ..distributed import routing
from ..distributed.exchange import ragged_index
from ..distributed.manifest import load_shards
from ..distributed.sharded import ShardedEmbedding

__all__ = ["ShardedStreamTrainer", "launch"]


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by `scale`."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class _RankSlice(nn.Module):
    """The base model on this rank's contiguous slice of each batch. BPR's loss is a mean over the batch, so the
    slice's gradients are scaled by slice / batch: summed over ranks by the owners they are the whole batch's."""

    def __init__(self, model: nn.Module, rank: int, world: int):
        super().__init__()
        self.model, self.rank, self.world = model, rank, world

    def set_graph(self, pairs) -> None:
        self.model.set_graph(pairs)

    def scorer(self):
        return self.model.scorer()

    def batch(self, users, pos, neg, propagated=None):
        part = torch.tensor_split(torch.arange(users.numel()), self.world)[self.rank]
        pos_s, neg_s, ego = self.model.batch(users[part], pos[part], neg[part], propagated)
        scale = part.numel() / max(1, users.numel())
        return _ScaleGrad.apply(pos_s, scale), _ScaleGrad.apply(neg_s, scale), [_ScaleGrad.apply(e, scale)
                                                                                for e in ego]


class ShardedStreamTrainer(StreamTrainer):
    """`StreamTrainer` with sharded tables over the default process group. Size policies that probe (SCALL's
    agent) are refused: their probes copy whole tables."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.policy.name == "scall" or getattr(self.policy, "replays", False):
            raise NotImplementedError(f"policy {self.policy.name!r} probes copies of the tables; the sharded stream "
                                      f"runs the other policies")
        if self.device.type != "cpu":
            raise NotImplementedError("the sharded stream runs on the CPU (gloo)")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def _rank_budget(self, widths: torch.Tensor, budget_bytes):
        """This rank's share of a byte budget: its rows' bytes at `widths` plus an even share of the slack, so
        the ranks' budgets add up to the table's."""
        if budget_bytes is None:
            return None
        per = self._bytes_per_param()
        need = [int(widths[r::self.world].sum()) * per + len(widths[r::self.world]) * METADATA_BYTES_PER_ROW
                for r in range(self.world)]
        slack = budget_bytes - sum(need)
        return need[self.rank] + slack // self.world + (slack % self.world if self.rank == 0 else 0)

    def _new_table(self, widths: torch.Tensor, budget_bytes):
        # The 1-process table, drawn from the same generator as the 1-process run, then cut into shards.
        single = super()._new_table(widths, None)
        with torch.random.fork_rng(devices=[]):  # the shards' own init is overwritten: it must not move the RNG
            table = ShardedEmbedding(len(widths), self.config.d_max, widths=widths, optimizer="adam",
                                     lr=self.config.lr, init_std=self.config.init_std)
        load_shards(table, {0: single.state_dict()}, 1)
        table.set_budget(self._rank_budget(widths, budget_bytes))
        return table

    def _build_model(self):
        super()._build_model()
        self.model = _RankSlice(self.model, self.rank, self.world)

    def _resize(self, table, widths: torch.Tensor, budget_bytes):
        table.set_budget(None)
        n_old = table.num_embeddings
        table.set_widths(widths[:n_old])
        if len(widths) > n_old:
            self._append(table, widths[n_old:])
        table.compact()
        table.set_budget(self._rank_budget(widths, budget_bytes))

    def _append(self, table, widths: torch.Tensor) -> None:
        """Append as the 1-process table does, values included: every rank draws all new rows' init and keeps
        its own rows'."""
        first = table.num_embeddings
        with torch.random.fork_rng(devices=[]):
            table.append(widths)
        drawn = table.local._row_init(int(widths.sum()), table.local.weight.dtype, table.local.weight.device)
        new_ids = torch.arange(first, first + len(widths))
        mine = routing.owner(new_ids, self.world) == self.rank
        w = widths.to(torch.int64)
        values = drawn[ragged_index((torch.cumsum(w, 0) - w)[mine], w[mine])]
        if values.numel():
            state = table.local.state_dict()
            state["values"][-values.numel():] = values  # the new rows are this rank's last rows
            table.local.load_state_dict(state)

    def fitness(self, model, ev, n_items: int, ks=(20,)) -> dict:
        scorer = model.scorer()  # collective: every rank gathers the rows
        out = [super().fitness(_Scored(scorer), ev, n_items, ks) if self.rank == 0 else None]
        dist.broadcast_object_list(out, src=0)
        return out[0]


class _Scored:
    """A model whose scorer is already built (so that rank 0 alone can compute the metrics)."""

    def __init__(self, scorer):
        self._scorer = scorer

    def scorer(self):
        return self._scorer


def launch(args, stream_command) -> int:
    """Run `stream_command(args)` on args.nproc gloo processes (or, under torchrun, on this one)."""
    from .cli import UsageError, _policy_names  # the CLI's own reading of --policy / --compare, its errors
    if args.nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {args.nproc}")
    if "scall" in _policy_names(args):
        raise UsageError("--nproc: policy scall does not run sharded yet (its probes copy whole tables); name "
                         "other policies with --policy or --compare")
    if args.resume:
        raise UsageError("--resume is not supported sharded (the checkpoints hold rank 0's shards only)")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun started us
        return _run(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "env://", args, stream_command)
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_run, args=(args.nproc, f"file://{os.path.join(tmp, 'store')}", args,
                                                stream_command), nprocs=args.nproc, join=True)
    return 0


def _run(rank: int, world: int, init_method: str, args, stream_command) -> int:
    args = copy.copy(args)
    if args.threads is None:
        args.threads = 1  # N processes on the machine's cores
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        if rank == 0:
            return stream_command(args, trainer_cls=ShardedStreamTrainer)
        # The other ranks run the same program quietly and write into a scratch folder.
        with tempfile.TemporaryDirectory() as scratch, open(os.devnull, "w") as quiet, \
                contextlib.redirect_stdout(quiet):
            args.out, args.no_progress = scratch, True
            return stream_command(args, trainer_cls=ShardedStreamTrainer)
    finally:
        dist.destroy_process_group()
