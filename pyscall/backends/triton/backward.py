"""Backward: per-row gradients with duplicate ids combined deterministically, then either the flat-buffer
gradient (drop-in mode) or a fused optimizer update of each touched row's first width entries.

Combining: positions are sorted stably by id, so each unique id owns a contiguous segment of positions in
position order; the lane at a segment's first position reduces it sequentially, the other lanes idle. Segment
ends come from searchsorted, so there is no host sync and no atomics anywhere.
"""
import torch
import triton
import triton.language as tl

from ...spec import OPTIMIZERS
from ._common import UPDATE_DTYPES, acc_dtype, check_ids, check_tensor, check_weight, num_warps, row_tile

# Kernel variants (constexpr globals so that @triton.jit code may read them when compiled for a GPU): FLAT,
# then each optimizer at its pyscall.spec code + 1.
FLAT = tl.constexpr(0)
SGD, ADAGRAD, ROWWISE_ADAGRAD, ADAM = (tl.constexpr(OPTIMIZERS[name].code + 1)
                                       for name in ("sgd", "adagrad", "rowwise_adagrad", "adam"))
VARIANTS = {"sgd": SGD, "adagrad": ADAGRAD, "rowwise_adagrad": ROWWISE_ADAGRAD, "adam": ADAM}
# Hyper-parameters travel in a small tensor of the weight's dtype: Triton passes Python floats as float32,
# which would round lr and eps for float64 tables.
# Order: lr, eps, beta1, beta2, weight_decay, lr / (1 - beta1**step), sqrt(1 - beta2**step).


@triton.jit
def _sqrt(x, ACC: tl.constexpr):
    """IEEE-rounded square root, as torch computes it: float64 sqrt is always exact-rounded on the GPU,
    float32 needs sqrt_rn (tl.sqrt is the fast approximate one there)."""
    if ACC == tl.float64:
        r = tl.sqrt(x)
    else:
        r = tl.sqrt_rn(x)
    return r


@triton.jit
def _segment_grad(grad_ptr, grad_stride, perm_ptr, src_ptr, scale_ptr, argmax_ptr, seg_lo, seg_hi, max_len,
                  d, dmask, HAS_SRC: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_ARGMAX: tl.constexpr,
                  ACC: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """g[r, :] = sum over the positions k of segment r, in position order, of scale[k] * grad_src[src[k], d]."""
    g = tl.zeros([BLOCK_ROWS, BLOCK_D], ACC)
    for j in range(0, max_len):
        p = seg_lo + j
        act = p < seg_hi
        k = tl.load(perm_ptr + p, mask=act, other=0)
        src = k
        if HAS_SRC:
            src = tl.load(src_ptr + k, mask=act, other=0)
        m = act[:, None] & dmask
        at = src[:, None] * grad_stride + d[None, :]
        gk = tl.load(grad_ptr + at, mask=m, other=0.0).to(ACC)
        if HAS_ARGMAX:
            winner = tl.load(argmax_ptr + at, mask=m, other=-1)
            gk = tl.where(winner == k[:, None], gk, 0.0)
        if HAS_SCALE:
            gk = gk * tl.load(scale_ptr + k, mask=act, other=0.0).to(ACC)[:, None]
        g = g + gk
    return g


# Triton 3.6 (seen on sm_90) fails to compile this kernel when grad_stride is specialized as a multiple of 16 and
# there is no scale: its layout pass breaks. The grad rows are gathered anyway, so alignment gains little there.
@triton.jit(do_not_specialize_on_alignment=["grad_stride"])
def _backward_kernel(grad_ptr, grad_stride, perm_ptr, src_ptr, scale_ptr, argmax_ptr, sorted_ptr, seg_end_ptr, n,
                     offsets_ptr, widths_ptr, num_rows, weight_ptr, out_ptr, s1_ptr, s2_ptr, row_state_ptr, hp_ptr,
                     OPT: tl.constexpr, HAS_SRC: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_ARGMAX: tl.constexpr,
                     ACC: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    # One program: BLOCK_ROWS sorted positions; a lane works only if its position starts a segment (one unique id).
    # Columns go in BLOCK_D chunks up to the widest row of the tile.
    p = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    p_ok = p < n
    row = tl.load(sorted_ptr + p, mask=p_ok, other=0)
    prev = tl.load(sorted_ptr + p - 1, mask=p_ok & (p > 0), other=0)
    first = p_ok & ((p == 0) | (prev != row))
    row_ok = first & (row >= 0) & (row < num_rows)
    off = tl.load(offsets_ptr + row, mask=row_ok, other=0)
    width = tl.minimum(tl.load(widths_ptr + row, mask=row_ok, other=0), grad_stride)  # 0 on idle lanes
    seg_lo = p
    seg_hi = tl.load(seg_end_ptr + p, mask=row_ok, other=0)
    seg_hi = tl.where(row_ok, seg_hi, seg_lo)  # idle lanes: empty segment
    max_len = tl.max(seg_hi - seg_lo, axis=0)
    if OPT == ROWWISE_ADAGRAD:
        # The launcher makes BLOCK_D >= d_max: the whole row is in one tile, so g is computed once.
        d = tl.arange(0, BLOCK_D).to(tl.int64)
        dmask = d[None, :] < width[:, None]
        g = _segment_grad(grad_ptr, grad_stride, perm_ptr, src_ptr, scale_ptr, argmax_ptr, seg_lo, seg_hi, max_len,
                          d, dmask, HAS_SRC, HAS_SCALE, HAS_ARGMAX, ACC, BLOCK_ROWS, BLOCK_D)
        lr = tl.load(hp_ptr + 0)
        eps = tl.load(hp_ptr + 1)
        wd = tl.load(hp_ptr + 4)
        wp = weight_ptr + off[:, None] + d[None, :]
        w = tl.load(wp, mask=dmask, other=0.0).to(ACC)
        g = g + wd * w
        live = row_ok & (width > 0)  # width-0 rows have no mean: skipped
        mean_sq = tl.sum(g * g, axis=1) / tl.maximum(width, 1).to(ACC)
        r = tl.load(row_state_ptr + row, mask=live, other=0.0) + mean_sq.to(tl.float32)
        tl.store(row_state_ptr + row, r, mask=live)
        denom = _sqrt(r.to(ACC), ACC) + eps
        w = w - lr * g / denom[:, None]
        tl.store(wp, w.to(weight_ptr.dtype.element_ty), mask=dmask)
    else:
        max_w = tl.max(width, axis=0)
        for d0 in range(0, max_w, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D).to(tl.int64)
            dmask = d[None, :] < width[:, None]
            g = _segment_grad(grad_ptr, grad_stride, perm_ptr, src_ptr, scale_ptr, argmax_ptr, seg_lo, seg_hi,
                              max_len, d, dmask, HAS_SRC, HAS_SCALE, HAS_ARGMAX, ACC, BLOCK_ROWS, BLOCK_D)
            at = off[:, None] + d[None, :]
            if OPT == FLAT:
                tl.store(out_ptr + at, g.to(out_ptr.dtype.element_ty), mask=dmask)
            else:
                lr = tl.load(hp_ptr + 0)
                eps = tl.load(hp_ptr + 1)
                wd = tl.load(hp_ptr + 4)
                w = tl.load(weight_ptr + at, mask=dmask, other=0.0).to(ACC)
                g = g + wd * w
                if OPT == SGD:
                    w = w - lr * g
                if OPT == ADAGRAD:
                    s = tl.load(s1_ptr + at, mask=dmask, other=0.0).to(ACC) + g * g
                    tl.store(s1_ptr + at, s.to(s1_ptr.dtype.element_ty), mask=dmask)
                    w = w - lr * g / (_sqrt(s, ACC) + eps)
                if OPT == ADAM:
                    b1 = tl.load(hp_ptr + 2)
                    b2 = tl.load(hp_ptr + 3)
                    step_size = tl.load(hp_ptr + 5)
                    bc2_sqrt = tl.load(hp_ptr + 6)
                    m = b1 * tl.load(s1_ptr + at, mask=dmask, other=0.0).to(ACC) + (1.0 - b1) * g
                    v = b2 * tl.load(s2_ptr + at, mask=dmask, other=0.0).to(ACC) + (1.0 - b2) * g * g
                    tl.store(s1_ptr + at, m.to(s1_ptr.dtype.element_ty), mask=dmask)
                    tl.store(s2_ptr + at, v.to(s2_ptr.dtype.element_ty), mask=dmask)
                    w = w - step_size * m / (_sqrt(v, ACC) / bc2_sqrt + eps)
                tl.store(weight_ptr + at, w.to(weight_ptr.dtype.element_ty), mask=dmask)


def _check_grad_args(grad_src, ids, src_index, scale, argmax, offsets, widths, dtypes):
    """Checks the gradient-side arguments (all on grad_src's device); returns (device, N)."""
    if not isinstance(grad_src, torch.Tensor):
        raise TypeError(f"grad_src must be a torch.Tensor, got {type(grad_src).__name__}")
    device = grad_src.device
    check_tensor("grad_src", grad_src, dtypes=dtypes, device=device, ndim=2)
    n = check_ids(ids, device)
    check_tensor("offsets", offsets, dtypes=(torch.int64,), device=device, ndim=1)
    check_tensor("widths", widths, dtypes=(torch.int32,), device=device, ndim=1, numel=offsets.numel())
    if src_index is None:
        if grad_src.shape[0] != n:
            raise ValueError(f"grad_src must have {n} rows (one per id) when src_index is None, "
                             f"got {grad_src.shape[0]}")
    else:
        check_tensor("src_index", src_index, dtypes=(torch.int64,), device=device, ndim=1, numel=n)
    if scale is not None:
        check_tensor("scale", scale, dtypes=(grad_src.dtype,), device=device, ndim=1, numel=n)
    if argmax is not None:
        check_tensor("argmax", argmax, dtypes=(torch.int64,), device=device, ndim=2, shape=grad_src.shape)
    return device, n


def _segments(ids):
    """(sorted ids, perm, segment end of each sorted position): positions stably sorted by id."""
    sorted_ids, perm = torch.sort(ids, stable=True)
    return sorted_ids, perm, torch.searchsorted(sorted_ids, sorted_ids, right=True)


def tile(opt, d_max):
    """(BLOCK_ROWS, BLOCK_D) of the backward; row-wise Adagrad needs a whole row in one tile."""
    if opt.value == ROWWISE_ADAGRAD.value:
        return row_tile(d_max, 256, triton.next_power_of_2(max(d_max, 1)))
    return row_tile(d_max, 256, 64)


def _launch(opt, grad_src, ids, src_index, scale, argmax, offsets, widths, weight, out, s1, s2, row_state, hp,
            block=None):
    """block: (BLOCK_ROWS, BLOCK_D, num_warps) in place of the defaults, for bench/gpu_tile_sweep.py."""
    sorted_ids, perm, seg_end = _segments(ids)
    n = ids.numel()
    d_max = grad_src.shape[1]
    if block is None:
        block_rows, block_d = tile(opt, d_max)
        block = block_rows, block_d, num_warps(block_rows, block_d)
    block_rows, block_d, warps = block
    dummy = grad_src
    grid = (triton.cdiv(n, block_rows),)
    _backward_kernel[grid](
        grad_src, d_max, perm, src_index if src_index is not None else dummy,
        scale if scale is not None else dummy, argmax if argmax is not None else dummy,
        sorted_ids, seg_end, n, offsets, widths, offsets.numel(), weight, out,
        s1 if s1 is not None else weight, s2 if s2 is not None else weight,
        row_state if row_state is not None else weight, hp if hp is not None else weight,
        OPT=opt.value, HAS_SRC=src_index is not None, HAS_SCALE=scale is not None, HAS_ARGMAX=argmax is not None,
        ACC=acc_dtype(weight.dtype), BLOCK_ROWS=block_rows, BLOCK_D=block_d,
        num_warps=warps)


def flat_grad(grad_src, ids, src_index, scale, argmax, offsets, widths, capacity, uniform_width=0):
    # uniform_width (pyscall/backends/CONTRACT.md): the metadata stays valid, and these kernels read it regardless.
    _, n = _check_grad_args(grad_src, ids, src_index, scale, argmax, offsets, widths, UPDATE_DTYPES)
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
        raise ValueError(f"capacity must be a non-negative int, got {capacity!r}")
    out = torch.zeros(capacity, dtype=grad_src.dtype, device=grad_src.device)
    if n > 0 and grad_src.shape[1] > 0:
        _launch(FLAT, grad_src, ids, src_index, scale, argmax, offsets, widths, out, out, None, None, None, None)
    return out


def fused_update(grad_src, ids, src_index, scale, argmax, offsets, widths, weight, state, row_state,
                 optimizer, lr, eps, beta1, beta2, weight_decay, step, uniform_width=0):
    # uniform_width (pyscall/backends/CONTRACT.md): the metadata stays valid, and these kernels read it regardless.
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    device = check_weight(weight, UPDATE_DTYPES)
    grad_device, n = _check_grad_args(grad_src, ids, src_index, scale, argmax, offsets, widths, (weight.dtype,))
    if grad_device != device:
        raise ValueError(f"grad_src must be on {device} (the weight's device), got {grad_device}")
    state = list(state or [])
    if len(state) != OPTIMIZERS[optimizer].state_per_element:
        raise ValueError(f"optimizer {optimizer!r} needs {OPTIMIZERS[optimizer].state_per_element} state tensors, "
                         f"got {len(state)}")
    for i, s in enumerate(state):
        check_tensor(f"state[{i}]", s, dtypes=(weight.dtype,), device=device, ndim=1, numel=weight.numel())
    if optimizer == "rowwise_adagrad":
        check_tensor("row_state", row_state, dtypes=(torch.float32,), device=device, ndim=1,
                     numel=offsets.numel())
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise ValueError(f"step must be an int >= 1, got {step!r}")
    if n == 0 or grad_src.shape[1] == 0:
        return
    bc1 = 1.0 - beta1 ** step
    bc2 = 1.0 - beta2 ** step
    hp = torch.tensor([lr, eps, beta1, beta2, weight_decay, lr / bc1 if bc1 else 0.0, bc2 ** 0.5],
                      dtype=weight.dtype)
    if device.type == "cuda":  # pinned + non_blocking: no stream sync on the way in
        hp = hp.pin_memory().to(device, non_blocking=True)
    _launch(VARIANTS[optimizer], grad_src, ids, src_index, scale, argmax, offsets, widths, weight, weight,
            state[0] if state else None, state[1] if len(state) > 1 else None,
            row_state if optimizer == "rowwise_adagrad" else None, hp)
