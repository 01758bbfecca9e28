"""Triton kernels (pyscall.backends.triton) under the interpreter against the float64 reference
(pyscall.backends.reference)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before any triton import: CPU tensors run in the interpreter

import numpy as np
import pytest
import torch

pytest.importorskip("triton")
K = pytest.importorskip("pyscall.backends.triton")
from pyscall.backends import reference  # noqa: E402
from pyscall.backends.reference import dense, pooled as ref_pooled  # noqa: E402
from pyscall.backends.triton import _common  # noqa: E402
from pyscall.spec import OPTIMIZERS as SPEC  # noqa: E402

OPTIMIZERS = tuple(SPEC)
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-11, atol=1e-11)}


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Outputs the ops allocate start as NaN (floats) or a sentinel (ints), so unwritten entries show."""
    def empty(shape, dtype, device):
        t = torch.empty(shape, dtype=dtype, device=device)
        return t.fill_(float("nan") if dtype.is_floating_point else -777)
    monkeypatch.setattr(_common, "empty", empty)


# ---------------------------------------------------------------- reference

def make_table(gen, num_rows, d_max, dtype, gap=True):
    """Random ragged table: widths cover 0, 1, d_max and odd values; rows separated by random gaps."""
    widths = torch.randint(0, d_max + 1, (num_rows,), generator=gen)
    widths[:4] = torch.tensor([0, 1, d_max, d_max // 2 | 1])[:num_rows]
    gaps = torch.randint(0, 3 if gap else 1, (num_rows,), generator=gen)
    offsets = torch.cumsum(widths + gaps, 0) - widths  # each row starts after its own gap
    capacity = int((offsets + widths).max()) + 2
    weight = torch.randn(capacity, generator=gen, dtype=torch.float64).to(dtype)
    return weight, offsets.to(torch.int64), widths.to(torch.int32), capacity










def grad_inputs(gen, mode, ids, bag_offsets, d_max, dtype, table):
    """(grad_src, src_index, scale, argmax) as the autograd layer passes them for each mode."""
    n = len(ids)
    if mode == "padded":
        return torch.randn(n, d_max, generator=gen, dtype=torch.float64).to(dtype), None, None, None
    b = len(bag_offsets) - 1
    grad = torch.randn(b, d_max, generator=gen, dtype=torch.float64).to(dtype)
    lengths = (bag_offsets[1:] - bag_offsets[:-1])
    src = torch.repeat_interleave(torch.arange(b), lengths)
    if mode == "sum":
        return grad, src, torch.rand(n, generator=gen, dtype=torch.float64).to(dtype) + 0.5, None
    if mode == "mean":
        return grad, src, (1.0 / lengths.double())[src].to(dtype), None
    _, argmax = ref_pooled(table, ids, bag_offsets, "max", None)
    return grad, src, None, argmax


def ids_and_bags(gen, n, num_rows, num_bags):
    ids = torch.randint(0, num_rows, (n,), generator=gen)
    ids[: n // 3] = ids[n // 3: 2 * (n // 3)]  # many duplicates
    ids = ids[torch.randperm(n, generator=gen)]
    cuts = torch.sort(torch.randint(0, n + 1, (num_bags - 1,), generator=gen)).values
    bag_offsets = torch.cat([torch.tensor([0]), cuts, torch.tensor([n])])
    bag_offsets[2] = bag_offsets[1]  # at least one empty bag
    return ids, bag_offsets


def assert_close(actual, expected, dtype):
    torch.testing.assert_close(actual.double(), expected.double(), **TOL[dtype])


# ---------------------------------------------------------------- forward

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d_max", [13, 300])
def test_lookup_matches_dense(dtype, d_max):
    gen = torch.Generator().manual_seed(d_max)
    weight, offsets, widths, _ = make_table(gen, 40, d_max, dtype)
    ids, _ = ids_and_bags(gen, 50, 40, 3)
    ids[:4] = torch.arange(4)  # widths 0, 1, d_max, odd
    out = K.lookup(weight, offsets, widths, ids, d_max)
    assert out.dtype == dtype and out.shape == (50, d_max)
    torch.testing.assert_close(out.double(), dense(weight, offsets, widths, d_max)[ids], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lookup_half(dtype):
    gen = torch.Generator().manual_seed(5)
    weight, offsets, widths, _ = make_table(gen, 20, 9, dtype)
    ids = torch.randint(0, 20, (30,), generator=gen)
    out = K.lookup(weight, offsets, widths, ids, 9)
    torch.testing.assert_close(out.double(), dense(weight, offsets, widths, 9)[ids], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode,weighted", [("sum", False), ("sum", True), ("mean", False), ("max", False)])
@pytest.mark.parametrize("d_max", [11, 150])
def test_pooled_matches_dense(dtype, mode, weighted, d_max):
    gen = torch.Generator().manual_seed(7 + d_max)
    weight, offsets, widths, _ = make_table(gen, 30, d_max, dtype)
    ids, bag_offsets = ids_and_bags(gen, 60, 30, 7)
    psw = torch.rand(60, generator=gen, dtype=torch.float64).to(dtype) if weighted else None
    out, argmax = K.pooled(weight, offsets, widths, ids, bag_offsets, mode, psw, d_max)
    ref, ref_arg = ref_pooled(dense(weight, offsets, widths, d_max), ids, bag_offsets, mode, psw)
    assert_close(out, ref, dtype)
    if mode == "max":
        torch.testing.assert_close(argmax, ref_arg, rtol=0, atol=0)
        assert (argmax[1] == -1).all() and (out[1] == 0).all()  # the empty bag
    else:
        assert argmax is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pooled_half_accumulates_in_float32(dtype):
    gen = torch.Generator().manual_seed(4)
    weight, offsets, widths, _ = make_table(gen, 20, 9, dtype)
    ids, bag_offsets = ids_and_bags(gen, 40, 20, 5)
    table = dense(weight, offsets, widths, 9)
    for mode in ("sum", "max"):
        out, _ = K.pooled(weight, offsets, widths, ids, bag_offsets, mode, None, 9)
        ref, _ = ref_pooled(table, ids, bag_offsets, mode, None)
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), ref.to(dtype).double(), rtol=1e-2, atol=1e-2)


def test_pooled_large_bag_many_steps():
    """One bag longer than a program's step: the running max keeps the FIRST maximum across steps."""
    gen = torch.Generator().manual_seed(3)
    weight, offsets, widths, _ = make_table(gen, 8, 5, torch.float64)
    ids = torch.randint(0, 8, (500,), generator=gen)  # heavy repetition -> ties across steps
    bag_offsets = torch.tensor([0, 500])
    for mode in ("sum", "mean", "max"):
        out, argmax = K.pooled(weight, offsets, widths, ids, bag_offsets, mode, None, 5)
        ref, ref_arg = ref_pooled(dense(weight, offsets, widths, 5), ids, bag_offsets, mode, None)
        assert_close(out, ref, torch.float64)
        if mode == "max":
            torch.testing.assert_close(argmax, ref_arg, rtol=0, atol=0)


# ---------------------------------------------------------------- backward

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["padded", "sum", "mean", "max"])
@pytest.mark.parametrize("d_max", [9, 100])
def test_flat_grad_matches_dense(dtype, mode, d_max):
    gen = torch.Generator().manual_seed(11 + d_max)
    weight, offsets, widths, capacity = make_table(gen, 25, d_max, dtype)
    ids, bag_offsets = ids_and_bags(gen, 40, 25, 6)
    table = dense(weight, offsets, widths, d_max)
    grad, src, scale, argmax = grad_inputs(gen, mode, ids, bag_offsets, d_max, dtype, table)
    out = K.flat_grad(grad, ids, src, scale, argmax, offsets, widths, capacity)
    ref = reference.flat_grad(grad, ids, src, scale, argmax, offsets, widths, capacity)
    assert out.dtype == dtype and out.shape == (capacity,)
    assert_close(out, ref, dtype)


def test_flat_grad_segment_spanning_many_programs():
    """One id repeated far beyond a program's rows: its segment crosses program boundaries and is summed once."""
    gen = torch.Generator().manual_seed(13)
    d_max = 100  # 32 sorted positions per program
    weight, offsets, widths, capacity = make_table(gen, 12, d_max, torch.float64)
    ids = torch.cat([torch.full((200,), 2), torch.randint(0, 12, (50,), generator=gen)])
    ids = ids[torch.randperm(250, generator=gen)]
    grad = torch.randn(250, d_max, generator=gen, dtype=torch.float64)
    out = K.flat_grad(grad, ids, None, None, None, offsets, widths, capacity)
    ref = reference.flat_grad(grad, ids, None, None, None, offsets, widths, capacity)
    assert_close(out, ref, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("mode", ["padded", "sum", "max"])
def test_fused_update_several_steps(dtype, optimizer, mode):
    d_max = 70 if mode == "padded" else 12  # 70: several column chunks for the element-wise optimizers
    gen = torch.Generator().manual_seed(OPTIMIZERS.index(optimizer) * 10 + len(mode))
    weight, offsets, widths, _ = make_table(gen, 20, d_max, dtype)
    num_rows = len(offsets)
    state = [torch.rand(weight.numel(), generator=gen, dtype=torch.float64).to(dtype)
             for _ in range(SPEC[optimizer].state_per_element)]
    row_state = torch.rand(num_rows, generator=gen) if optimizer == "rowwise_adagrad" else None
    ref_w, ref_s = weight.double().clone(), [s.double().clone() for s in state]
    ref_r = row_state.clone() if row_state is not None else None
    hp = dict(lr=0.05, eps=1e-6, beta1=0.8, beta2=0.95, weight_decay=0.01)
    for step in range(1, 4):
        ids, bag_offsets = ids_and_bags(gen, 30, num_rows, 5)
        table = dense(ref_w, offsets, widths, d_max)
        grad, src, scale, argmax = grad_inputs(gen, mode, ids, bag_offsets, d_max, dtype, table)
        K.fused_update(grad, ids, src, scale, argmax, offsets, widths, weight, state, row_state,
                       optimizer, step=step, **hp)
        G, touched = reference.row_grads(grad, ids, src, scale, argmax, widths, d_max)
        reference.update(G, touched, offsets, widths, ref_w, ref_s, ref_r, optimizer, hp["lr"], hp["eps"],
                         hp["beta1"], hp["beta2"], hp["weight_decay"], step)
        assert_close(weight, ref_w, dtype)  # whole buffer: untouched rows and gaps must not move
        for s, r in zip(state, ref_s):
            assert_close(s, r, dtype)
        if row_state is not None:
            torch.testing.assert_close(row_state.double(), ref_r.double(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- int64 offsets

def test_offsets_beyond_int32():
    """Rows just below and across 2**31 in a sparse buffer (only touched pages are committed)."""
    base = 2 ** 31 - 6
    d_max = 8
    weight = torch.empty(2 ** 31 + 64, dtype=torch.float32)
    widths = torch.tensor([5, 8, 3, 7], dtype=torch.int32)
    offsets = torch.tensor([base - 10, base, base + 8, base + 40], dtype=torch.int64)  # row 1 straddles 2**31
    gen = torch.Generator().manual_seed(0)
    for o, w in zip(offsets.tolist(), widths.tolist()):
        weight[o:o + w] = torch.randn(w, generator=gen)
    ids = torch.tensor([1, 3, 2, 0, 1])
    table = torch.stack([torch.cat([weight[o:o + w].double(), torch.zeros(d_max - w, dtype=torch.float64)])
                         for o, w in zip(offsets.tolist(), widths.tolist())])
    torch.testing.assert_close(K.lookup(weight, offsets, widths, ids, d_max).double(), table[ids])
    out, _ = K.pooled(weight, offsets, widths, ids, torch.tensor([0, 2, 5]), "sum", None, d_max)
    torch.testing.assert_close(out.double(), torch.stack([table[ids[:2]].sum(0), table[ids[2:]].sum(0)]))
    grad = torch.randn(5, d_max, generator=gen)
    before = [weight[o:o + w].double().clone() for o, w in zip(offsets.tolist(), widths.tolist())]
    K.fused_update(grad, ids, None, None, None, offsets, widths, weight, [], None, "sgd",
                   lr=0.5, eps=0.0, beta1=0.0, beta2=0.0, weight_decay=0.0, step=1)
    g, _ = reference.row_grads(grad, ids, None, None, None, widths, d_max)
    for i, (o, w) in enumerate(zip(offsets.tolist(), widths.tolist())):
        torch.testing.assert_close(weight[o:o + w].double(), before[i] - 0.5 * g[i][:w])


# ---------------------------------------------------------------- bad input

def test_bad_input_raises_and_changes_nothing():
    gen = torch.Generator().manual_seed(1)
    weight, offsets, widths, capacity = make_table(gen, 10, 6, torch.float32)
    ids = torch.tensor([1, 2, 3])
    grad = torch.randn(3, 6, generator=gen)
    with pytest.raises(TypeError, match="int64"):
        K.lookup(weight, offsets, widths, ids.int(), 6)
    with pytest.raises(TypeError, match="int32"):
        K.lookup(weight, offsets, widths.long(), ids, 6)
    with pytest.raises(ValueError, match="meta"):
        K.lookup(weight, offsets, widths, ids.to("meta"), 6)
    with pytest.raises(ValueError, match="contiguous"):
        K.lookup(weight, offsets, widths, torch.arange(6)[::2], 6)
    with pytest.raises(ValueError, match="'sum'"):
        K.pooled(weight, offsets, widths, ids, torch.tensor([0, 3]), "max", torch.ones(3), 6)
    with pytest.raises(ValueError, match="mode"):
        K.pooled(weight, offsets, widths, ids, torch.tensor([0, 3]), "median", None, 6)
    with pytest.raises(ValueError, match="3 rows"):
        K.flat_grad(grad[:2], ids, None, None, None, offsets, widths, capacity)
    snapshot = weight.clone()
    with pytest.raises(ValueError, match="2 state tensors"):
        K.fused_update(grad, ids, None, None, None, offsets, widths, weight, [torch.zeros_like(weight)], None,
                       "adam", 0.1, 1e-8, 0.9, 0.99, 0.0, 1)
    with pytest.raises(TypeError, match="float32"):
        K.fused_update(grad.double(), ids, None, None, None, offsets, widths, weight, [], None,
                       "sgd", 0.1, 1e-8, 0.9, 0.99, 0.0, 1)
    with pytest.raises(ValueError, match="step"):
        K.fused_update(grad, ids, None, None, None, offsets, widths, weight, [], None,
                       "sgd", 0.1, 1e-8, 0.9, 0.99, 0.0, 0)
    assert torch.equal(weight, snapshot)


def test_forward_ops_reject_ids_out_of_range():
    """lookup and pooled check ids themselves (pyscall/backends/CONTRACT.md), as the C++ backend does."""
    gen = torch.Generator().manual_seed(2)
    weight, offsets, widths, _ = make_table(gen, 10, 6, torch.float32)
    for bad in ([2, 10], [-1, 3]):
        with pytest.raises(IndexError, match="index out of range in self"):
            K.lookup(weight, offsets, widths, torch.tensor(bad), 6)
        with pytest.raises(IndexError, match="index out of range in self"):
            K.pooled(weight, offsets, widths, torch.tensor(bad), torch.tensor([0, 2]), "sum", None, 6)


# ---------------------------------------------------------------- against the CPU backend

def test_matches_backend_cpu():
    cpu = pytest.importorskip("pyscall.backends.cpu")
    gen = torch.Generator().manual_seed(9)
    d_max = 10
    weight, offsets, widths, capacity = make_table(gen, 30, d_max, torch.float64)
    ids, bag_offsets = ids_and_bags(gen, 50, 30, 6)
    torch.testing.assert_close(K.lookup(weight, offsets, widths, ids, d_max),
                               cpu.lookup(weight, offsets, widths, ids, d_max))
    for mode in ("sum", "mean", "max"):
        a = K.pooled(weight, offsets, widths, ids, bag_offsets, mode, None, d_max)
        b = cpu.pooled(weight, offsets, widths, ids, bag_offsets, mode, None, d_max)
        torch.testing.assert_close(a[0], b[0])
        assert (a[1] is None) == (b[1] is None) and (a[1] is None or torch.equal(a[1], b[1]))
    grad = torch.randn(50, d_max, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(K.flat_grad(grad, ids, None, None, None, offsets, widths, capacity),
                               cpu.flat_grad(grad, ids, None, None, None, offsets, widths, capacity))
    for opt in OPTIMIZERS:
        ws = [weight.clone(), weight.clone()]
        states = [[torch.rand(capacity, generator=gen, dtype=torch.float64) for _ in range(SPEC[opt].state_per_element)]]
        states.append([s.clone() for s in states[0]])
        rows = [torch.rand(30, generator=gen)]
        rows.append(rows[0].clone())
        for backend, w, s, r in zip((K, cpu), ws, states, rows):
            backend.fused_update(grad, ids, None, None, None, offsets, widths, w, s, r, opt,
                                 0.05, 1e-6, 0.8, 0.95, 0.01, 2)
        torch.testing.assert_close(ws[0], ws[1])
        for a, b in zip(*states):
            torch.testing.assert_close(a, b)
