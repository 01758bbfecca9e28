"""GPU device check for pyscall: correctness of every GPU kernel, then timings, in a few minutes.
(Over 400 lines: a device machine runs one script whole, with no checkout tools; the float64 reference is
pyscall/backends/reference.py.)

On the GPU machine (no internet), from the repository root:
    1. pip install --no-build-isolation .        (or pass --build and this script runs it first)
    2. python bench/device_check.py              (checks, then timings; exit status 1 on any mismatch or error)
Here, without a GPU:
    python bench/device_check.py --cpu-dry-run   (same code path, tiny sizes, CPU, TRITON_INTERPRET=1)

(a) Every Triton op (lookup, pooled, flat_grad, fused_update) and the CUDA arena mover against a float64
    reference on fresh random data, outputs poisoned before each call, and against pyscall.backends.cpu when
    it is installed.
(b) Times forward (padded, pooled), backward + fused update (Adam, row-wise Adagrad) and a 10,000,000-row
    arena re-layout, at mean width 16 / d_max 256 and all widths = d_max, against torch.nn.Embedding /
    EmbeddingBag with the matching torch optimizer (sparse gradients + SparseAdam / Adagrad; row-wise Adagrad has
    no torch twin, so Adagrad stands in), the re-layout against a torch gather/scatter of the same elements, and
    everything against a device-to-device copy moving the same bytes (the bandwidth ceiling). Bytes counted:
    forward = ragged values read + output written; backward = grad entries read (first width of each position)
    + weight and per-element state read and written for the unique rows; re-layout = copied values read + new
    buffer written.
"""
import argparse
import copy
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", action="store_true", help="pip install --no-build-isolation . before checking")
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU under TRITON_INTERPRET=1")
    p.add_argument("--skip-timing", action="store_true", help="correctness checks only")
    return p.parse_args()


ARGS = parse_args()
if ARGS.cpu_dry_run:
    os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton
if ARGS.build:
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "."], cwd=ROOT,
                   check=True)

import torch  # noqa: E402
import triton  # noqa: E402

import pyscall  # noqa: E402
import pyscall.backends.triton as K  # noqa: E402
from pyscall import _C  # noqa: E402
from pyscall.backends.reference import (col_mask, dense, pooled as ref_pooled, row_grads as ref_row_grads,  # noqa: E402
                                        scatter_rows, update as ref_update)
from pyscall.backends.triton import _common  # noqa: E402
from gpu_timer import mean_ms  # noqa: E402

try:
    import pyscall.backends.cpu as CPU
except ImportError:
    CPU = None

DRY = ARGS.cpu_dry_run
DEV = torch.device("cpu" if DRY else "cuda")
FAILURES = []
RESULTS = []  # rows of the final table


def note_failure(what, detail):
    FAILURES.append(f"{what}: {detail}")
    print(f"  FAIL {what}: {detail}", flush=True)


def poisoned_empty(shape, dtype, device):
    t = torch.empty(shape, dtype=dtype, device=device)
    return t.fill_(float("nan") if dtype.is_floating_point else -777)


PLAIN_EMPTY = _common.empty  # timings use the plain allocator: poisoning would add a write pass per call


def compare(what, actual, expected, rtol, atol):
    if actual.shape != expected.shape:
        note_failure(what, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}")
        return
    a, e = actual.double(), expected.double()
    bad = ~torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=False)
    if bool(bad.any()):
        i = int(bad.flatten().nonzero()[0, 0])
        note_failure(what, f"{int(bad.sum())} of {bad.numel()} differ, first at flat index {i}: "
                           f"{a.flatten()[i].item()!r} vs {e.flatten()[i].item()!r}")
    else:
        print(f"  ok   {what}", flush=True)


# ------------------------------------------------------------------ random tables and float64 references

def make_layout(n_rows, d_max, mean_width, gen, gaps=True):
    """(offsets, widths int64, capacity) on the host: widths around the mean with 0, 1, d_max and odd ones."""
    if mean_width >= d_max:
        widths = torch.full((n_rows,), d_max, dtype=torch.int64)
    else:
        widths = torch.poisson(torch.full((n_rows,), float(mean_width)), generator=gen).long().clamp_(0, d_max)
        widths[:4] = torch.tensor([0, 1, d_max, d_max // 2 | 1])
    gap = torch.randint(0, 3, (n_rows,), generator=gen) if gaps else torch.zeros(n_rows, dtype=torch.int64)
    offsets = torch.cumsum(widths + gap, 0) - widths
    return offsets, widths, int((offsets + widths).max()) + 1


def make_table(n_rows, d_max, mean_width, dtype, gen, gaps=True):
    offsets, widths, capacity = make_layout(n_rows, d_max, mean_width, gen, gaps)
    weight = torch.randn(capacity, generator=gen, dtype=torch.float64).to(dtype)
    return weight.to(DEV), offsets.to(DEV), widths.to(torch.int32).to(DEV), capacity


def random_batch(n, n_rows, n_bags, gen, zipf=True):
    """ids with heavy duplication (a power-law head, like real traffic) and bags with some empty ones."""
    if zipf:
        ids = (torch.rand(n, generator=gen) ** 3 * n_rows).long().clamp_(max=n_rows - 1)
    else:
        ids = torch.randint(0, n_rows, (n,), generator=gen)
    cuts = torch.sort(torch.randint(0, n + 1, (n_bags - 1,), generator=gen)).values
    bag_offsets = torch.cat([torch.tensor([0]), cuts, torch.tensor([n])])
    if n_bags > 2:
        bag_offsets[2] = bag_offsets[1]
    return ids.to(DEV), bag_offsets.to(DEV)


def grad_inputs(kind, ids, bag_offsets, d_max, dtype, table, gen):
    n = len(ids)
    if kind == "padded":
        return torch.randn(n, d_max, generator=gen, dtype=torch.float64).to(dtype).to(DEV), None, None, None
    lengths = bag_offsets[1:] - bag_offsets[:-1]
    b = len(lengths)
    grad = torch.randn(b, d_max, generator=gen, dtype=torch.float64).to(dtype).to(DEV)
    src = torch.repeat_interleave(torch.arange(b, device=DEV), lengths)
    if kind == "sum":
        return grad, src, (torch.rand(n, generator=gen, dtype=torch.float64) + 0.5).to(dtype).to(DEV), None
    if kind == "mean":
        return grad, src, (1.0 / lengths.double())[src].to(dtype), None
    return grad, src, None, ref_pooled(table, ids, bag_offsets, "max", None)[1]


# ------------------------------------------------------------------ (a) correctness

def check_kernels(dtype, d_max, mean_width, n_rows, n, n_bags, seed):
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    tag = f"{str(dtype).replace('torch.', '')} d_max={d_max} mean_width={mean_width}"
    gen = torch.Generator().manual_seed(seed)
    weight, offsets, widths, capacity = make_table(n_rows, d_max, mean_width, dtype, gen)
    ids, bag_offsets = random_batch(n, n_rows, n_bags, gen)
    table = dense(weight, offsets, widths, d_max)
    # copies, never aliases: on the dry run the "device" is the CPU too and the updates must not add up
    cpu_args = lambda *ts: [t.to("cpu", copy=True) if isinstance(t, torch.Tensor) else t for t in ts]  # noqa: E731

    out = K.lookup(weight, offsets, widths, ids, d_max)
    compare(f"lookup {tag}", out, table[ids], rtol=0, atol=0)
    if CPU is not None:
        compare(f"lookup vs backends.cpu {tag}", out.cpu(), CPU.lookup(*cpu_args(weight, offsets, widths, ids, d_max)),
                rtol=0, atol=0)
    for mode, weighted in (("sum", False), ("sum", True), ("mean", False), ("max", False)):
        psw = (torch.rand(n, generator=gen, dtype=torch.float64) + 0.5).to(dtype).to(DEV) if weighted else None
        out, arg = K.pooled(weight, offsets, widths, ids, bag_offsets, mode, psw, d_max)
        ref, ref_arg = ref_pooled(table, ids, bag_offsets, mode, psw)
        name = f"pooled {mode}{' weighted' if weighted else ''} {tag}"
        compare(name, out, ref, **tol)
        if mode == "max":
            compare(name + " argmax", arg, ref_arg, rtol=0, atol=0)
        if CPU is not None:
            c_out, c_arg = CPU.pooled(*cpu_args(weight, offsets, widths, ids, bag_offsets, mode, psw, d_max))
            compare(name + " vs backends.cpu", out.cpu(), c_out, **tol)
            if mode == "max":
                compare(name + " argmax vs backends.cpu", arg.cpu(), c_arg, rtol=0, atol=0)

    for kind in ("padded", "sum", "mean", "max"):
        grad, src, scale, argmax = grad_inputs(kind, ids, bag_offsets, d_max, dtype, table, gen)
        G, touched = ref_row_grads(grad, ids, src, scale, argmax, widths, d_max)
        ref = torch.zeros(capacity, dtype=torch.float64, device=DEV)
        rows = touched.nonzero().flatten()
        scatter_rows(ref, rows, G[rows], offsets, widths)
        out = K.flat_grad(grad, ids, src, scale, argmax, offsets, widths, capacity)
        compare(f"flat_grad {kind} {tag}", out, ref, **tol)
        if CPU is not None:
            compare(f"flat_grad {kind} vs backends.cpu {tag}", out.cpu(),
                    CPU.flat_grad(*cpu_args(grad, ids, src, scale, argmax, offsets, widths, capacity)), **tol)

    hp = dict(lr=0.02, eps=1e-6, beta1=0.85, beta2=0.97, weight_decay=0.01)
    for opt, n_state in (("sgd", 0), ("adagrad", 1), ("rowwise_adagrad", 0), ("adam", 2)):
        w = weight.clone()
        state = [torch.rand(capacity, generator=gen, dtype=torch.float64).to(dtype).to(DEV) for _ in range(n_state)]
        row_state = torch.rand(n_rows, generator=gen).to(DEV) if opt == "rowwise_adagrad" else None
        W, S = w.to(torch.float64, copy=True), [s.to(torch.float64, copy=True) for s in state]  # never aliases
        R = row_state.clone() if row_state is not None else None
        cpu_copy = cpu_args(w, *state, row_state) if CPU is not None else None
        for step in (1, 2):
            ids_s, bags_s = random_batch(n, n_rows, n_bags, gen)
            kind = "padded" if step == 1 else "sum"
            grad, src, scale, argmax = grad_inputs(kind, ids_s, bags_s, d_max, dtype, None, gen)
            K.fused_update(grad, ids_s, src, scale, argmax, offsets, widths, w, state, row_state, opt,
                           step=step, **hp)
            G, touched = ref_row_grads(grad, ids_s, src, scale, argmax, widths, d_max)
            ref_update(G, touched, offsets, widths, W, S, R, opt, hp["lr"], hp["eps"], hp["beta1"], hp["beta2"],
                       hp["weight_decay"], step)
            if cpu_copy is not None:
                cw, cs, cr = cpu_copy[0], cpu_copy[1:1 + n_state], cpu_copy[-1]
                CPU.fused_update(*cpu_args(grad, ids_s, src, scale, argmax, offsets, widths), cw, cs, cr, opt,
                                 step=step, **hp)
        compare(f"fused {opt} weight (2 steps, whole buffer) {tag}", w, W, **tol)
        for i, (s, ref_s) in enumerate(zip(state, S)):
            compare(f"fused {opt} state[{i}] {tag}", s, ref_s, **tol)
        if row_state is not None:
            compare(f"fused {opt} row_state {tag}", row_state, R, rtol=1e-5, atol=1e-6)
        if cpu_copy is not None:
            compare(f"fused {opt} weight vs backends.cpu {tag}", w.cpu(), cpu_copy[0], **tol)


def reference_move(src_buf, dst_buf, src, dst, copy, total):
    """All moves read before any writes: memmove semantics per move, valid for independent moves."""
    n = len(src)
    rep = torch.repeat_interleave(torch.arange(n, device=src.device), total)
    j = torch.arange(int(total.sum()), device=src.device) - torch.repeat_interleave(torch.cumsum(total, 0) - total,
                                                                                     total)
    keep = j < copy[rep]
    vals = torch.where(keep, src_buf[torch.where(keep, src[rep] + j, 0)], torch.zeros((), dtype=src_buf.dtype,
                                                                                    device=src.device))
    dst_buf[dst[rep] + j] = vals


def mover():
    if DEV.type == "cuda" and _C.with_cuda:
        from pyscall.cuda_move import move_rows
        return "cuda move_rows", lambda *a: move_rows(*a, validate=False), move_rows
    return "torch reference mover (no CUDA build or dry run)", reference_move, reference_move


def relayout_plan(n_rows, d_max, mean_width, gen):
    """An ordered step: every live row of a gapped layout, widths changed, packed into a fresh buffer."""
    old_off, old_w, old_cap = make_layout(n_rows, d_max, mean_width, gen)
    new_w = (old_w + torch.randint(-3, 4, (n_rows,), generator=gen)).clamp_(0, d_max)
    new_off = torch.cumsum(new_w, 0) - new_w
    plan = (old_off, new_off, torch.minimum(old_w, new_w), new_w)
    return (*(a.to(DEV) for a in plan), old_cap, int(new_w.sum()))


def bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def check_mover(seed):
    name, move, checked_move = mover()
    gen = torch.Generator().manual_seed(seed)
    for dtype in (torch.float16, torch.float32, torch.float64):
        tag = f"{name} {str(dtype).replace('torch.', '')}"
        src, dst, copy, total, old_cap, new_cap = relayout_plan(3000, 64, 13, gen)
        old = torch.randn(old_cap, generator=gen).to(dtype).to(DEV)
        new, ref = (torch.full((new_cap,), float("nan"), dtype=dtype, device=DEV) for _ in range(2))
        move(old, new, src, dst, copy, total)
        reference_move(old, ref, src, dst, copy, total)
        compare(f"{tag} ordered out-of-place", bits(new), bits(ref), rtol=0, atol=0)
        # Unordered, in place: rows of the first half move to disjoint places in the second half, one row shifts
        # onto itself (overlap), one shrinks in place.
        buf = torch.randn(2 * old_cap + 64, generator=gen).to(dtype).to(DEV)
        # Rows 2 (odd width) and 3 (width d_max) stay out of the picked set so that all moves are independent.
        pick = (4 + torch.randperm(len(src) - 4, generator=gen)[:500]).to(DEV)
        c, t = copy[pick], total[pick]
        d = old_cap + 32 + torch.cumsum(t, 0) - t
        half = copy[2:3] - copy[2:3] // 2
        s = torch.cat([src[pick], src[2:4]])
        d = torch.cat([d, src[2:3] + 3, src[3:4]])  # row 2 shifts by 3 inside its own extent; row 3 shrinks
        c = torch.cat([c, half, copy[3:4] // 2])
        t = torch.cat([t, half, copy[3:4]])
        ref = buf.clone()
        reference_move(buf.clone(), ref, s, d, c, t)
        move(buf, buf, s, d, c, t)
        compare(f"{tag} unordered in place (with overlap)", bits(buf), bits(ref), rtol=0, atol=0)
    if checked_move is not reference_move:
        try:
            bad = torch.tensor([5], device=DEV)
            checked_move(old, new, bad, bad, bad, torch.tensor([10 ** 12], device=DEV))
            note_failure(f"{name} bad plan", "no IndexError")
        except IndexError:
            print(f"  ok   {name} bad plan -> IndexError", flush=True)


# ------------------------------------------------------------------ (b) timings

def copy_ms(n_bytes, iters):
    """Device-to-device copy moving n_bytes in total (n_bytes / 2 read + n_bytes / 2 written)."""
    a = torch.empty(max(n_bytes // 8, 1), dtype=torch.float32, device=DEV)
    b = torch.empty_like(a)
    return mean_ms(lambda: b.copy_(a), iters, DEV)


def record(case, op, ms, n_bytes, copy_time, torch_ms):
    RESULTS.append(dict(case=case, op=op, ms=ms, gbs=n_bytes / ms / 1e6, pct=100 * copy_time / ms,
                        torch_ms=torch_ms, speedup=(torch_ms / ms) if torch_ms else None))
    baseline = f"torch {torch_ms:.3f} ms" if torch_ms else "no torch baseline"
    print(f"  {case:<22} {op:<28} {ms:8.3f} ms  {n_bytes / ms / 1e6:8.1f} GB/s  "
          f"{100 * copy_time / ms:5.1f}% of copy  {baseline}", flush=True)


def torch_step_ms(module, opt, make_input, grad_out, iters):
    """torch baseline backward + optimizer step (forward outside the timed region is not possible without
    graphs kept alive, so the forward is run untimed right before each timed backward)."""
    total = 0.0
    for i in range(iters + 2):
        opt.zero_grad(set_to_none=True)
        out = module(*make_input())
        if DEV.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            out.backward(grad_out)
            opt.step()
            e.record()
            torch.cuda.synchronize()
            ms = s.elapsed_time(e)
        else:
            t0 = time.perf_counter()
            out.backward(grad_out)
            opt.step()
            ms = (time.perf_counter() - t0) * 1e3
        total += ms if i >= 2 else 0.0
    return total / iters


def time_case(label, n_rows, d_max, mean_width, n, bag_size, iters):
    gen = torch.Generator().manual_seed(123)
    weight, offsets, widths, capacity = make_table(n_rows, d_max, mean_width, torch.float32, gen, gaps=False)
    ids = torch.randint(0, n_rows, (n,), generator=gen).to(DEV)
    n_bags = n // bag_size
    bag_offsets = torch.arange(0, n + 1, bag_size, device=DEV)
    es = 4
    row_bytes = int(widths.long()[ids].sum()) * es  # the ragged values a lookup must read
    uniq = torch.unique(ids)
    uniq_bytes = int(widths.long()[uniq].sum()) * es

    emb = torch.nn.Embedding(n_rows, d_max, device=DEV, sparse=True)
    bag = torch.nn.EmbeddingBag(n_rows, d_max, mode="sum", device=DEV, sparse=True)

    # Forward, padded: read rows + write [N, d_max].
    nb = row_bytes + n * d_max * es
    with torch.no_grad():
        t_torch = mean_ms(lambda: emb(ids), iters, DEV)
    ms = mean_ms(lambda: K.lookup(weight, offsets, widths, ids, d_max), iters, DEV)
    record(label, "forward padded", ms, nb, copy_ms(nb, iters), t_torch)
    # Forward, pooled sum.
    nb = row_bytes + n_bags * d_max * es
    with torch.no_grad():
        t_torch = mean_ms(lambda: bag(ids, bag_offsets[:-1]), iters, DEV)
    record(label, f"forward pooled sum (bag {bag_size})",
           mean_ms(lambda: K.pooled(weight, offsets, widths, ids, bag_offsets, "sum", None, d_max), iters, DEV), nb,
           copy_ms(nb, iters), t_torch)
    # Backward + fused update from the padded lookup's grad_out.
    grad = torch.randn(n, d_max, generator=gen).to(DEV)
    hp = dict(lr=0.01, eps=1e-8, beta1=0.9, beta2=0.999, weight_decay=0.0)
    grad_read = row_bytes  # only each position's first width entries of grad_out are read
    for opt_name, per_elem_rw, torch_opt in (
            ("adam", 3, lambda p: torch.optim.SparseAdam(p, lr=0.01)),
            ("rowwise_adagrad", 1, lambda p: torch.optim.Adagrad(p, lr=0.01))):
        state = [torch.zeros(capacity, device=DEV) for _ in range(2 if opt_name == "adam" else 0)]
        row_state = torch.zeros(n_rows, device=DEV) if opt_name == "rowwise_adagrad" else None
        step = [0]

        def run():
            step[0] += 1
            K.fused_update(grad, ids, None, None, None, offsets, widths, weight, state, row_state, opt_name,
                           step=step[0], **hp)

        nb = grad_read + 2 * per_elem_rw * uniq_bytes
        t_torch = torch_step_ms(emb, torch_opt(emb.parameters()), lambda: (ids,), grad, iters)
        record(label, f"backward+{opt_name}", mean_ms(run, iters, DEV), nb, copy_ms(nb, iters), t_torch)


def time_movement(label, n_rows, d_max, mean_width, iters):
    name, move, _ = mover()
    gen = torch.Generator().manual_seed(321)
    src, dst, copy, total, old_cap, new_cap = relayout_plan(n_rows, d_max, mean_width, gen)
    old = torch.randn(old_cap, device=DEV) if DEV.type == "cuda" else torch.randn(old_cap, generator=gen)
    new = torch.empty(new_cap, device=DEV)
    nb = int(copy.sum()) * 4 + new_cap * 4  # bytes read + written
    ms = mean_ms(lambda: move(old, new, src, dst, copy, total), iters, DEV)
    # torch baseline: the same re-layout as one gather + scatter over element indices (needs ~50 bytes of index
    # memory per element, so only where that fits).
    torch_ms = (mean_ms(lambda: reference_move(old, new, src, dst, copy, total), iters, DEV)
                if new_cap <= 4e8 else None)
    move(old, new, src, dst, copy, total)  # the baseline wrote `new` too: check our mover's own result
    # Spot-check the timed run on a sample of moves against the reference.
    pick = torch.randperm(n_rows, generator=gen)[:2000].to(DEV)
    ref = torch.full_like(new, float("nan"))
    reference_move(old, ref, src[pick], dst[pick], copy[pick], total[pick])
    m = col_mask(total[pick].int(), d_max)
    r_idx, c_idx = m.nonzero(as_tuple=True)
    at = dst[pick][r_idx] + c_idx
    compare(f"{name} {label} sample of the timed re-layout", new[at], ref[at], rtol=0, atol=0)
    del old, new, ref
    if DEV.type == "cuda":
        torch.cuda.empty_cache()  # the copy baseline needs the room
    record(label, f"re-layout {n_rows:,} rows", ms, nb, copy_ms(nb, iters), torch_ms)


def check_modules(seed):
    """pyscall.Embedding / EmbeddingBag on the device (Triton kernels + CUDA arena replay) against the
    same modules on the CPU (C++ kernels + CPU replay), through training steps and layout changes."""
    gen = torch.Generator().manual_seed(seed)
    widths = torch.randint(0, 65, (5000,), generator=gen, dtype=torch.int32)
    tables, start = {}, None  # 0: CPU, 1: the device
    for device in ("cpu", DEV):
        torch.manual_seed(seed)
        emb = pyscall.Embedding(5000, 64, widths=widths, optimizer="adam", lr=0.01, dtype=torch.float64,
                                device=device)
        bag = pyscall.EmbeddingBag(5000, 64, mode="sum", widths=widths, optimizer="rowwise_adagrad", lr=0.1,
                                   dtype=torch.float64, device=device)
        if start is None:
            start = [{k: v.clone() for k, v in m.state_dict().items()} for m in (emb, bag)]
        else:  # the same starting values as the CPU tables
            emb.load_state_dict(start[0])
            bag.load_state_dict(start[1])
        g = torch.Generator().manual_seed(seed + 1)
        for step in range(3):
            ids = torch.randint(0, bag.num_embeddings, (2048,), generator=g).to(device)
            emb(ids).pow(2).sum().backward()
            bag(ids, torch.arange(0, 2048, 8, device=device)).sum().backward()
            new_widths = torch.randint(0, 65, (emb.num_embeddings,), generator=g, dtype=torch.int32)
            if step == 0:
                emb.set_widths(new_widths)
                bag.resize(torch.arange(0, 5000, 7), 64)
            elif step == 1:
                new_ids = emb.append(torch.tensor([64, 3], dtype=torch.int32))
                # New rows draw from each device's own generator: give both tables the same values.
                a = emb._arena
                for r in new_ids.tolist():
                    off, w = int(a.offsets[r]), int(a.widths[r])
                    a.weight.data[off:off + w] = torch.linspace(-1, 1, w, dtype=torch.float64)
                emb.resize(torch.tensor([0, 1, 2]), torch.tensor([64, 0, 5], dtype=torch.int32))
                bag.compact()
        tables[len(tables)] = (emb, bag)
    for k, name in enumerate(("Embedding+adam", "EmbeddingBag+rowwise_adagrad")):
        compare(f"module {name}", tables[1][k].to_dense().cpu(), tables[0][k].to_dense(), 1e-9, 1e-12)
        tables[1][k]._arena.validate()


def check_module_move(seed):
    """A table built on the CPU and moved with Module.to (its fused state and metadata too), and a
    deep copy of it, train alike: the moved one on the device, the copy on the CPU."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    widths = torch.randint(0, 65, (3000,), generator=gen, dtype=torch.int32)
    cpu = pyscall.Embedding(3000, 64, widths=widths, optimizer="adam", lr=0.01, dtype=torch.float64)
    cpu.resize(torch.arange(0, 3000, 11), 0)  # free space inside the layout
    moved = copy.deepcopy(cpu).to(DEV)
    for step in range(3):
        ids = torch.randint(0, 3000, (1024,), generator=gen)
        cpu(ids).pow(2).sum().backward()
        moved(ids.to(DEV)).pow(2).sum().backward()
        if step == 1:
            for table in (cpu, moved):
                table.resize(torch.arange(0, 3000, 13), 64)
    compare("module moved with .to(device)", moved.to_dense().cpu(), cpu.to_dense(), 1e-9, 1e-12)
    moved._arena.validate()


def guarded(what, fn, *args):
    try:
        fn(*args)
    except Exception as e:  # keep going: one broken part must not hide the others' results
        note_failure(what, f"{type(e).__name__}: {e}")
        traceback.print_exc()


def main():
    t0 = time.perf_counter()
    card = "CPU (dry run, TRITON_INTERPRET=1)" if DRY else torch.cuda.get_device_name()
    print(f"pyscall device check on {card}: torch {torch.__version__}, triton {triton.__version__}, "
          f"_C.with_cuda={_C.with_cuda}, backends.cpu={'yes' if CPU else 'absent'}", flush=True)
    print("(a) correctness", flush=True)
    _common.empty = poisoned_empty  # every output the ops allocate starts poisoned during the checks
    if DRY:
        guarded("kernels f32", check_kernels, torch.float32, 9, 4, 40, 60, 6, 1)
        guarded("kernels f64", check_kernels, torch.float64, 33, 12, 30, 50, 5, 2)
        guarded("mover", check_mover, 3)
        guarded("modules (CPU against CPU: exercises the script only)", check_modules, 5)
        guarded("module moved (CPU to CPU: exercises the script only)", check_module_move, 6)
    else:
        guarded("kernels f32 d256", check_kernels, torch.float32, 256, 16, 20000, 30000, 1000, 1)
        guarded("kernels f32 d37", check_kernels, torch.float32, 37, 37, 5000, 20000, 500, 2)
        guarded("kernels f64 d256", check_kernels, torch.float64, 256, 16, 5000, 20000, 500, 3)
        guarded("mover", check_mover, 4)
        guarded("modules on the device vs the CPU", check_modules, 5)
        guarded("module moved to the device vs the CPU", check_module_move, 6)
    _common.empty = PLAIN_EMPTY
    print(f"    checks took {time.perf_counter() - t0:.1f} s", flush=True)
    if not ARGS.skip_timing:
        print("(b) timings", flush=True)
        if DRY:
            sizes = dict(n_rows=300, n=256, bag_size=16, iters=1)
            moves, miters = 2000, 1
        else:
            sizes = dict(n_rows=1_000_000, n=262_144, bag_size=32, iters=20)
            moves, miters = 10_000_000, 5
        for label, mean_width in (("mean width 16, d 256", 16), ("all widths = d 256", 256)):
            guarded(f"timing {label}", lambda: time_case(label, d_max=256, mean_width=mean_width, **sizes))
            if DEV.type == "cuda":
                torch.cuda.empty_cache()  # the re-layout below needs tens of GB
            guarded(f"movement {label}", time_movement, label, moves, 256, mean_width, miters)
    print(f"\npyscall device check: {card} | torch {torch.__version__} | triton {triton.__version__} | "
          f"pyscall {pyscall.__version__} | {time.perf_counter() - t0:.0f} s")
    if RESULTS:
        print(f"{'case':<22} {'op':<30} {'ms':>9} {'GB/s':>9} {'% copy':>7} {'torch ms':>9} {'speed-up':>9}")
        for r in RESULTS:
            tm = f"{r['torch_ms']:9.3f}" if r["torch_ms"] else f"{'-':>9}"
            su = f"{r['speedup']:8.2f}x" if r["speedup"] else f"{'-':>9}"
            print(f"{r['case']:<22} {r['op']:<30} {r['ms']:9.3f} {r['gbs']:9.1f} {r['pct']:6.1f}% {tm} {su}")
    print(f"{len(FAILURES)} failure(s)" + ("".join(f"\n  {f}" for f in FAILURES) if FAILURES else ""))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
