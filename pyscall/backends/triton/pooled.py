"""Pooled lookup (EmbeddingBag): sum / mean / max per bag, optional per-sample weights for sum."""
import torch
import triton
import triton.language as tl

from . import _common
from ...spec import POOL_MODES
from ._common import acc_dtype, check_ids, check_table, check_tensor, check_weight, num_warps



@triton.jit
def _pooled_kernel(weight_ptr, offsets_ptr, widths_ptr, ids_ptr, bag_ptr, psw_ptr, out_ptr, argmax_ptr,
                   n, num_rows, d_max,
                   MODE: tl.constexpr, HAS_PSW: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    # One program: one bag x BLOCK_D columns, BLOCK_K positions of the bag per step.
    bag = tl.program_id(0).to(tl.int64)
    d = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)
    start = tl.load(bag_ptr + bag)
    end = tl.minimum(tl.load(bag_ptr + bag + 1), n)
    acc = tl.zeros([BLOCK_D], ACC)
    best_k = tl.full([BLOCK_D], -1, tl.int64)
    if MODE == 2:
        acc = tl.full([BLOCK_D], float("-inf"), ACC)
    for k0 in range(start, end, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < end
        row = tl.load(ids_ptr + k, mask=k_ok, other=0)
        row_ok = k_ok & (row >= 0) & (row < num_rows)
        off = tl.load(offsets_ptr + row, mask=row_ok, other=0)
        width = tl.load(widths_ptr + row, mask=row_ok, other=0)
        read = (d[None, :] < width[:, None]) & (d[None, :] < d_max)
        # Positions past a row's width are logical zeros (they take part in "max" too).
        vals = tl.load(weight_ptr + off[:, None] + d[None, :], mask=read, other=0.0).to(ACC)
        if MODE == 2:
            vals = tl.where(k_ok[:, None], vals, float("-inf"))
            tile_best = tl.max(vals, axis=0)
            # First position of this step holding the step's maximum; later steps win only if strictly greater.
            tile_k = tl.min(tl.where(vals == tile_best[None, :], k[:, None], end), axis=0)
            take = tile_best > acc
            acc = tl.where(take, tile_best, acc)
            best_k = tl.where(take, tile_k, best_k)
        else:
            if HAS_PSW:
                vals = vals * tl.load(psw_ptr + k, mask=k_ok, other=0.0).to(ACC)[:, None]
            acc += tl.sum(vals, axis=0)
    d_ok = d < d_max
    if MODE == 1:
        acc = acc / tl.maximum(end - start, 1).to(ACC)
    if MODE == 2:
        acc = tl.where(best_k >= 0, acc, 0.0)  # empty bag -> zeros, argmax -1
        tl.store(argmax_ptr + bag * d_max + d, best_k, mask=d_ok)
    tl.store(out_ptr + bag * d_max + d, acc.to(out_ptr.dtype.element_ty), mask=d_ok)


def tile(d_max):
    """(BLOCK_K, BLOCK_D): 1,024 elements a program (bench/gpu_tile_sweep.py picks it per card)."""
    block_d = min(triton.next_power_of_2(max(d_max, 1)), 256)
    return max(1, 1024 // block_d), block_d


def pooled(weight, offsets, widths, ids, bag_offsets, mode, per_sample_weights, d_max, uniform_width=0):
    # uniform_width (pyscall/backends/CONTRACT.md): the metadata stays valid, and these kernels read it regardless.
    device = check_weight(weight)
    num_rows = check_table(offsets, widths, device, d_max)
    n = check_ids(ids, device, num_rows)
    if mode not in POOL_MODES:
        raise ValueError(f"mode must be one of {sorted(POOL_MODES)}, got {mode!r}")
    check_tensor("bag_offsets", bag_offsets, dtypes=(torch.int64,), device=device, ndim=1)
    if bag_offsets.numel() == 0:
        raise ValueError("bag_offsets must have B+1 >= 1 elements (bag_offsets[0] == 0, bag_offsets[-1] == N)")
    if per_sample_weights is not None:
        if mode != "sum":
            raise ValueError(f"per_sample_weights is only supported with mode 'sum', got mode {mode!r}")
        check_tensor("per_sample_weights", per_sample_weights, dtypes=(weight.dtype,), device=device, ndim=1,
                     numel=n)
    num_bags = bag_offsets.numel() - 1
    out = _common.empty((num_bags, d_max), weight.dtype, device)
    argmax = _common.empty((num_bags, d_max), torch.int64, device) if mode == "max" else None
    if num_bags == 0 or d_max == 0:
        return out, argmax
    block_k, block_d = tile(d_max)
    grid = (num_bags, triton.cdiv(d_max, block_d))
    _pooled_kernel[grid](weight, offsets, widths, ids, bag_offsets,
                         per_sample_weights if per_sample_weights is not None else weight,
                         out, argmax if argmax is not None else out,
                         n, num_rows, d_max,
                         MODE=POOL_MODES[mode], HAS_PSW=per_sample_weights is not None, ACC=acc_dtype(weight.dtype),
                         BLOCK_K=block_k, BLOCK_D=block_d, num_warps=num_warps(block_k, block_d))
    return out, argmax
