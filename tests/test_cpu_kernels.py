"""CPU kernels (pyscall.backends.cpu) against the float64 reference (pyscall.backends.reference) and torch.
(Over 400 lines: the four kernels of the contract, each forward, backward and bad-input case, in one place.)"""
import math
import platform
import re
import shutil
import subprocess

import pytest
import torch
import torch.nn.functional as F

from pyscall import host
from pyscall.backends import cpu as K
from pyscall.backends import reference
from pyscall.backends.reference import dense as to_dense, flat as to_flat
from pyscall.spec import OPTIMIZERS

TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5)}
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every output the kernels allocate starts as NaN (floats) or a sentinel (ints), so an entry
    the kernel forgets to write fails the comparison instead of passing as leftover zeros."""
    empty = torch.empty

    def poisoned(*size, **kw):
        t = empty(*size, **kw)
        return t.fill_(math.nan if t.is_floating_point() else 987654321)

    monkeypatch.setattr(K.torch, "empty", poisoned)


def make_table(rows, d_max, dtype, seed):
    """Random ragged table: widths cover 0, 1, odd, d_max; rows sit in the buffer in shuffled order
    with gaps between them."""
    g = torch.Generator().manual_seed(seed)
    widths = torch.randint(0, d_max + 1, (rows,), generator=g, dtype=torch.int32)
    widths[:4] = torch.tensor([0, 1, d_max, 3 if d_max >= 3 else d_max], dtype=torch.int32)
    order = torch.randperm(rows, generator=g)
    gaps = torch.randint(0, 3, (rows,), generator=g)
    sizes = widths[order].long() + gaps
    starts = torch.cumsum(sizes, 0) - sizes
    offsets = torch.empty(rows, dtype=torch.int64)
    offsets[order] = starts
    capacity = int(sizes.sum()) + 5
    weight = torch.randn(capacity, generator=g, dtype=torch.float64).to(dtype)
    return weight, offsets, widths






def make_ids(rows, n, g, always=()):
    """Random ids with duplicates; `always` rows appear in every batch."""
    ids = torch.randint(0, rows, (n,), generator=g)
    ids[:len(always)] = torch.tensor(always, dtype=torch.int64)
    return ids[torch.randperm(n, generator=g)]


def make_bags(n, g):
    """bag_offsets [B+1] with some empty bags."""
    cuts = torch.sort(torch.randint(0, n + 1, (n // 3,), generator=g)).values
    cuts[:2] = 0  # an empty first bag
    return torch.cat([cuts, torch.tensor([n, n])])  # and an empty last bag


def reference_forward(dense, ids, mode, bag_offsets=None, psw=None):
    if mode == "padded":
        return dense[ids]
    return F.embedding_bag(ids, dense, bag_offsets, mode=mode, per_sample_weights=psw,
                           include_last_offset=True)




# ---------------------------------------------------------------------------------------------
# forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d_max", [1, 7, 64])
def test_lookup(dtype, d_max):
    weight, offsets, widths = make_table(50, d_max, dtype, seed=d_max)
    g = torch.Generator().manual_seed(1)
    ids = make_ids(50, 300, g, always=[0, 1, 2, 3])
    out = K.lookup(weight, offsets, widths, ids, d_max)
    assert out.dtype == dtype and out.shape == (300, d_max)
    torch.testing.assert_close(out.double(), to_dense(weight, offsets, widths, d_max)[ids], rtol=0,
                               atol=0)


def test_lookup_empty_batch():
    weight, offsets, widths = make_table(5, 4, torch.float32, seed=0)
    out = K.lookup(weight, offsets, widths, torch.empty(0, dtype=torch.int64), 4)
    assert out.shape == (0, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["sum", "mean", "max", "sum_weighted"])
@pytest.mark.parametrize("d_max", [9, 20, 64, 150])  # vector tails and several vector widths
def test_pooled(dtype, mode, d_max):
    weight, offsets, widths = make_table(40, d_max, dtype, seed=3)
    g = torch.Generator().manual_seed(2)
    ids = make_ids(40, 200, g, always=[0, 1, 2, 3])
    bag_offsets = make_bags(200, g)
    psw = torch.randn(200, generator=g, dtype=torch.float64).to(dtype) if mode == "sum_weighted" \
        else None
    mode = "sum" if mode == "sum_weighted" else mode
    out, argmax = K.pooled(weight, offsets, widths, ids, bag_offsets, mode, psw, d_max)
    dense = to_dense(weight, offsets, widths, d_max)
    ref = reference_forward(dense, ids, mode, bag_offsets, None if psw is None else psw.double())
    assert out.dtype == dtype and out.shape == (len(bag_offsets) - 1, d_max)
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    if mode == "max":
        assert torch.equal(argmax, reference.pooled(dense, ids, bag_offsets, "max", None)[1])
    else:
        assert argmax is None


# ---------------------------------------------------------------------------------------------
# backward


def sources(mode, table, ids, d_max, g, dtype):
    """Gradient inputs of the ops contract for one forward mode, plus the dense float64 reference
    gradient of the table (masked past widths by the caller)."""
    dense = to_dense(*table, d_max)
    n = len(ids)
    bag_offsets = make_bags(n, g)
    bags = len(bag_offsets) - 1
    bag_of = torch.repeat_interleave(torch.arange(bags), bag_offsets.diff())
    psw = torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
    fwd = {"padded": "padded", "sum": "sum", "sum_weighted": "sum", "mean": "mean", "max": "max"}
    rows_out = n if mode == "padded" else bags
    grad_out = torch.randn(rows_out, d_max, generator=g, dtype=torch.float64).to(dtype)

    leaf = dense.clone().requires_grad_(True)
    ref_out = reference_forward(leaf, ids, fwd[mode], bag_offsets,
                                psw.double() if mode == "sum_weighted" else None)
    (ref_out * grad_out.double()).sum().backward()

    src = dict(grad_src=grad_out, ids=ids, src_index=None, scale=None, argmax=None)
    if mode != "padded":
        src["src_index"] = bag_of
    if mode == "sum_weighted":
        src["scale"] = psw
    if mode == "mean":
        counts = bag_offsets.diff()[bag_of]
        src["scale"] = (1.0 / counts.double()).to(dtype)
    if mode == "max":
        # argmax of the kernel's own forward; it is checked against numpy in test_pooled
        src["argmax"] = K.pooled(*table, ids, bag_offsets, "max", None, d_max)[1]
    return src, leaf.grad


MODES = ["padded", "sum", "sum_weighted", "mean", "max"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_flat_grad(dtype, mode):
    d_max = 8
    weight, offsets, widths = make_table(30, d_max, dtype, seed=5)
    g = torch.Generator().manual_seed(6)
    ids = make_ids(30, 90, g, always=[0, 1, 2, 3])
    src, ref = sources(mode, (weight, offsets, widths), ids, d_max, g, dtype)
    out = K.flat_grad(**src, offsets=offsets, widths=widths, capacity=weight.numel())
    assert out.dtype == dtype and out.shape == weight.shape
    torch.testing.assert_close(out.double(), to_flat(ref, offsets, widths, weight.numel()),
                               **TOL[dtype])


def test_flat_grad_deterministic_across_threads():
    d_max = 16
    weight, offsets, widths = make_table(20, d_max, torch.float32, seed=7)
    g = torch.Generator().manual_seed(8)
    ids = torch.randint(0, 20, (2000,), generator=g)  # ~100 duplicates per id
    grad = torch.randn(2000, d_max, generator=g) * 1e3
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2):
            torch.set_num_threads(t)
            results.append(K.flat_grad(grad, ids, None, None, None, offsets, widths,
                                       weight.numel()))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])
    # sequential sum in position order, exactly
    ref = torch.zeros(weight.numel())
    for k, i in enumerate(ids.tolist()):
        o, w = int(offsets[i]), int(widths[i])
        ref[o:o + w] += grad[k, :w]
    assert torch.equal(results[0], ref)


def test_flat_grad_groups_ids_of_a_large_table_in_position_order():
    # 2^23 + 3 rows: the radix sort of (id, position) keys takes three 11-bit passes over the id bits.
    rows, d_max = (1 << 23) + 3, 2
    g = torch.Generator().manual_seed(9)
    touched = torch.tensor([0, 1, 2047, 2048, (1 << 22) + 1, rows - 2, rows - 1])
    ids = touched[torch.randint(0, touched.numel(), (600,), generator=g)]
    widths = torch.zeros(rows, dtype=torch.int32)
    widths[touched] = torch.tensor([2, 1, 2, 2, 1, 2, 2], dtype=torch.int32)
    offsets = torch.zeros(rows, dtype=torch.int64)
    offsets[touched] = torch.cumsum(widths[touched].long(), 0) - widths[touched].long()
    capacity = int(widths.sum())
    grad = torch.randn(600, d_max, generator=g) * 1e3
    out = K.flat_grad(grad, ids, None, None, None, offsets, widths, capacity)
    ref = torch.zeros(capacity)
    for k, i in enumerate(ids.tolist()):  # sequential sum in position order, exactly
        o, w = int(offsets[i]), int(widths[i])
        ref[o:o + w] += grad[k, :w]
    assert torch.equal(out, ref)


# ---------------------------------------------------------------------------------------------
# fused optimizers

HYPER = dict(lr=0.05, eps=1e-6, beta1=0.8, beta2=0.95, weight_decay=0.01)




@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", ["sgd", "adagrad", "rowwise_adagrad", "adam"])
@pytest.mark.parametrize("mode", MODES)
def test_fused_update_matches_formulas(dtype, opt, mode):
    d_max, rows = 19, 30  # widths past 8 and 16 reach the 8-wide SIMD rows and their tails
    weight, offsets, widths = make_table(rows, d_max, dtype, seed=9)
    n_state = OPTIMIZERS[opt].state_per_element
    state = [torch.rand(weight.shape, dtype=torch.float64).to(dtype) for _ in range(n_state)]
    row_state = torch.rand(rows) if opt == "rowwise_adagrad" else None
    # float64 reference copies of the flat buffers
    ref_w, ref_s = weight.double().clone(), [s.double().clone() for s in state]
    ref_r = None if row_state is None else row_state.clone()
    untouched = [rows - 1]  # never in a batch: must not change at all
    weight_before = weight.clone()
    g = torch.Generator().manual_seed(10)
    hp = [HYPER[k] for k in ("lr", "eps", "beta1", "beta2", "weight_decay")]
    for step in range(1, 4):
        ids = make_ids(rows - 1, 60, g, always=[0, 1, 2, 3])
        src, grad = sources(mode, (weight, offsets, widths), ids, d_max, g, dtype)
        K.fused_update(**src, offsets=offsets, widths=widths, weight=weight, state=state,
                       row_state=row_state, optimizer=opt, step=step, **HYPER)
        touched = torch.zeros(rows, dtype=torch.bool)
        touched[ids] = True
        reference.update(grad, touched, offsets, widths, ref_w, ref_s, ref_r, opt, *hp, step)
        # compare against the reference each step, using the current weight as the next forward
        torch.testing.assert_close(to_dense(weight, offsets, widths, d_max), to_dense(ref_w, offsets, widths, d_max),
                                   **TOL[dtype])
        for s, rs in zip(state, ref_s):
            torch.testing.assert_close(to_dense(s, offsets, widths, d_max), to_dense(rs, offsets, widths, d_max),
                                       **TOL[dtype])
        if row_state is not None:
            torch.testing.assert_close(row_state, ref_r, rtol=1e-6, atol=1e-7)
            ref_w = weight.double().clone()  # float32 r: restart from the kernel's
    # untouched row and the gaps between rows never change
    touched = torch.zeros(weight.numel(), dtype=torch.bool)
    for i in range(rows):
        if i not in untouched:
            touched[int(offsets[i]):int(offsets[i]) + int(widths[i])] = True
    assert torch.equal(weight[~touched], weight_before[~touched])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", ["sgd", "adagrad", "adam"])
def test_fused_update_matches_torch_optim(dtype, opt):
    """Rows touched at every step follow torch.optim on a dense tensor exactly (within rounding)."""
    d_max, rows = 13, 12
    weight, offsets, widths = make_table(rows, d_max, dtype, seed=11)
    always = list(range(rows))
    dense = torch.nn.Parameter(to_dense(weight, offsets, widths, d_max))
    hp = dict(lr=HYPER["lr"], weight_decay=HYPER["weight_decay"])
    torch_opt = {"sgd": lambda: torch.optim.SGD([dense], **hp),
                 "adagrad": lambda: torch.optim.Adagrad([dense], eps=HYPER["eps"], **hp),
                 "adam": lambda: torch.optim.Adam([dense], eps=HYPER["eps"],
                                                  betas=(HYPER["beta1"], HYPER["beta2"]), **hp)}[opt]()
    state = [torch.zeros_like(weight) for _ in range(OPTIMIZERS[opt].state_per_element)]
    g = torch.Generator().manual_seed(12)
    for step in range(1, 5):
        ids = make_ids(rows, 40, g, always=always)
        grad_out = torch.randn(40, d_max, generator=g, dtype=torch.float64)
        K.fused_update(grad_out.to(dtype), ids, None, None, None, offsets, widths, weight, state,
                       None, opt, step=step, **HYPER)
        torch_opt.zero_grad()
        (dense[ids] * grad_out).sum().backward()
        dense.grad *= (torch.arange(d_max) < widths[:, None])  # masked past widths
        torch_opt.step()
        torch.testing.assert_close(to_dense(weight, offsets, widths, d_max), dense.detach(),
                                   **TOL[dtype])


# ---------------------------------------------------------------------------------------------
# bad input: clear exceptions, nothing changed


def table32():
    return make_table(10, 4, torch.float32, seed=13)


@pytest.mark.parametrize("bad_id", [10, -1])
def test_out_of_range_id_raises_index_error_and_writes_nothing(bad_id):
    weight, offsets, widths = table32()
    ids = torch.tensor([0, 1, bad_id, 2])
    with pytest.raises(IndexError, match="index out of range in self"):
        K.lookup(weight, offsets, widths, ids, 4)
    for mode in ("sum", "max"):
        with pytest.raises(IndexError, match="index out of range in self"):
            K.pooled(weight, offsets, widths, ids, torch.tensor([0, 2, 4]), mode, None, 4)
    grad = torch.randn(4, 4)
    with pytest.raises(IndexError, match="index out of range in self"):
        K.flat_grad(grad, ids, None, None, None, offsets, widths, weight.numel())
    state = [torch.rand_like(weight), torch.rand_like(weight)]
    before = [weight.clone()] + [s.clone() for s in state]
    with pytest.raises(IndexError, match="index out of range in self"):
        K.fused_update(grad, ids, None, None, None, offsets, widths, weight, state, None, "adam",
                       step=1, **HYPER)
    assert all(torch.equal(a, b) for a, b in zip(before, [weight] + state))


def test_bad_metadata_raises_value_error():
    weight, offsets, widths = table32()
    ids = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="exceeds d_max"):
        K.lookup(weight, offsets, widths, torch.tensor([0, 2]), 3)  # row 2: width 4 > d_max 3
    with pytest.raises(ValueError, match="outside the buffer"):
        K.lookup(weight[:2].contiguous(), offsets, widths, torch.tensor([2]), 4)
    with pytest.raises(IndexError, match="src_index"):
        K.flat_grad(torch.randn(1, 4), ids, torch.tensor([0, 1]), None, None, offsets, widths, 40)


def uniform_table(rows, width, dtype, seed):
    """Every row `width` wide at offset id * width, as the arena lays out a table built without widths."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows * width + 3, generator=g, dtype=torch.float64).to(dtype)
    return weight, torch.arange(rows) * width, torch.full((rows,), width, dtype=torch.int32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [5, 16])  # d_max 16: zero padding, and none
def test_uniform_width_matches_the_reference(dtype, width):
    """With uniform_width the kernels find rows without the metadata, and give what the float64
    reference computed from that metadata gives."""
    d_max, rows = 16, 40
    weight, offsets, widths = uniform_table(rows, width, dtype, seed=width)
    dense = to_dense(weight, offsets, widths, d_max)
    ids = torch.randint(0, rows, (60,), generator=torch.Generator().manual_seed(1))
    ids[:3] = ids[3]  # duplicates
    torch.testing.assert_close(K.lookup(weight, offsets, widths, ids, d_max, width).double(), dense[ids],
                               **TOL[dtype])
    bag_offsets = torch.tensor([0, 7, 7, 30, 60])
    for mode in ("sum", "mean", "max"):
        out, _ = K.pooled(weight, offsets, widths, ids, bag_offsets, mode, None, d_max, width)
        ref = F.embedding_bag(ids, dense, bag_offsets[:-1], mode=mode)
        torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    grad = torch.randn(60, d_max, dtype=torch.float64)
    dense_grad = to_flat(torch.zeros(rows, d_max, dtype=torch.float64).index_add_(0, ids, grad), offsets, widths,
                         weight.numel())
    flat = K.flat_grad(grad.to(dtype), ids, None, None, None, offsets, widths, weight.numel(), width)
    torch.testing.assert_close(flat.double(), dense_grad, **TOL[dtype])
    expected = weight.double() - 0.1 * dense_grad
    K.fused_update(grad.to(dtype), ids, None, None, None, offsets, widths, weight, [], None, "sgd", lr=0.1,
                   eps=0.0, beta1=0.0, beta2=0.0, weight_decay=0.0, step=1, uniform_width=width)
    torch.testing.assert_close(weight.double(), expected, **TOL[dtype])


def test_uniform_width_outside_the_buffer_is_refused_and_changes_nothing():
    weight, offsets, widths = uniform_table(10, 4, torch.float32, seed=0)  # 43 elements
    for bad in (-1, 9, 5):  # negative, over d_max 8, 10 rows * 5 past the buffer
        with pytest.raises(ValueError, match="uniform_width"):
            K.lookup(weight, offsets, widths, torch.tensor([9]), 8, bad)
    before = weight.clone()
    with pytest.raises(ValueError, match="uniform_width"):
        K.fused_update(torch.ones(1, 8), torch.tensor([9]), None, None, None, offsets, widths, weight, [], None, "sgd",
                       step=1, uniform_width=5, **HYPER)
    with pytest.raises(IndexError, match="index out of range in self"):  # ids are still checked
        K.fused_update(torch.ones(1, 8), torch.tensor([10]), None, None, None, offsets, widths, weight, [], None,
                       "sgd", step=1, uniform_width=4, **HYPER)
    assert torch.equal(weight, before)


@pytest.mark.parametrize("bag_offsets", [[1, 2], [0, 1], [0, 2, 1, 2]])
def test_bad_bag_offsets(bag_offsets):
    weight, offsets, widths = table32()
    with pytest.raises(ValueError, match="bag_offsets"):
        K.pooled(weight, offsets, widths, torch.tensor([0, 1]), torch.tensor(bag_offsets), "sum",
                 None, 4)


def test_wrong_types_name_the_expected_value():
    weight, offsets, widths = table32()
    ids = torch.tensor([0, 1])
    with pytest.raises(TypeError, match="ids must have dtype torch.int64"):
        K.lookup(weight, offsets, widths, ids.int(), 4)
    with pytest.raises(TypeError, match="weight must have dtype torch.float32 or torch.float64"):
        K.lookup(weight.half(), offsets, widths, ids, 4)
    with pytest.raises(TypeError, match="widths must have dtype torch.int32"):
        K.lookup(weight, offsets, widths.long(), ids, 4)
    with pytest.raises(ValueError, match="must be on device cpu"):
        K.lookup(weight.to("meta"), offsets, widths, ids, 4)
    with pytest.raises(ValueError, match="contiguous"):
        K.lookup(weight, offsets, widths, torch.arange(4)[::2], 4)
    with pytest.raises(ValueError, match="mode='sum'"):
        K.pooled(weight, offsets, widths, ids, torch.tensor([0, 2]), "mean", torch.ones(2), 4)
    with pytest.raises(ValueError, match="mode must be one of"):
        K.pooled(weight, offsets, widths, ids, torch.tensor([0, 2]), "min", None, 4)
    grad = torch.randn(2, 4)
    with pytest.raises(TypeError, match="grad_src must have dtype torch.float32"):
        K.fused_update(grad.double(), ids, None, None, None, offsets, widths, weight, [], None,
                       "sgd", step=1, **HYPER)
    with pytest.raises(ValueError, match="needs 2 state tensors"):
        K.fused_update(grad, ids, None, None, None, offsets, widths, weight, [], None, "adam",
                       step=1, **HYPER)
    with pytest.raises(ValueError, match="row_state"):
        K.fused_update(grad, ids, None, None, None, offsets, widths, weight, [], None,
                       "rowwise_adagrad", step=1, **HYPER)
    with pytest.raises(ValueError, match="step must be an int >= 1"):
        K.fused_update(grad, ids, None, None, None, offsets, widths, weight, [], None, "sgd",
                       step=0, **HYPER)


def test_advance_step_reads_the_hyper_parameters_and_counts_one_step():
    hparams = torch.tensor([0.1, 1e-8, 0.9, 0.999, 0.01], dtype=torch.float64)
    step = torch.tensor([41])
    assert host.advance_step(hparams, step) == (0.1, 1e-8, 0.9, 0.999, 0.01, 42)
    assert step.item() == 42
    with pytest.raises(TypeError, match="hparams must have dtype torch.float64"):
        host.advance_step(hparams.float(), step)
    with pytest.raises(ValueError, match=r"step must have shape \(1,\)"):
        host.advance_step(hparams, torch.tensor([1, 2]))
    assert step.item() == 42


@pytest.mark.skipif(platform.machine() != "x86_64" or shutil.which("objdump") is None,
                    reason="reads x86-64 machine code with objdump")
def test_built_kernels_keep_their_prefetches():
    """GCC deletes calls to a helper whose only effect is __builtin_prefetch (it finds it pure): the
    kernels once shipped with no prefetch at all, and random-row lookups ran up to 3x slower. Lookup,
    pooled and backward (float and double) issue at least 3 prefetches each."""
    from pyscall import _C
    code = subprocess.run(["objdump", "-d", "--no-show-raw-insn", _C.__file__], capture_output=True, text=True,
                          check=True).stdout
    assert len(re.findall(r"\tprefetch", code)) >= 18
