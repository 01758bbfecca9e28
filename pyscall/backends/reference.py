"""The kernel contract (CONTRACT.md) in float64 torch, on any device: what tests/test_cpu_kernels.py,
tests/test_triton_kernels.py and bench/device_check.py compare the backends with. Plain tensor code, written for
clarity, not speed; nothing in the library calls it."""
from __future__ import annotations

import torch
from torch import Tensor


def col_mask(widths: Tensor, d_max: int) -> Tensor:
    """[rows, d_max] bool: the stored positions of each row."""
    return torch.arange(d_max, device=widths.device)[None, :] < widths.long()[:, None]


def dense(weight: Tensor, offsets: Tensor, widths: Tensor, d_max: int) -> Tensor:
    """The table's logical rows, float64 [rows, d_max], zeros past each width."""
    w = widths.long()
    rows = torch.repeat_interleave(torch.arange(len(w), device=w.device), w)
    cols = torch.arange(int(w.sum()), device=w.device) - torch.repeat_interleave(torch.cumsum(w, 0) - w, w)
    out = torch.zeros(len(w), d_max, dtype=torch.float64, device=w.device)
    out[rows, cols] = weight[offsets.long()[rows] + cols].double()
    return out


def scatter_rows(flat: Tensor, rows: Tensor, values: Tensor, offsets: Tensor, widths: Tensor) -> None:
    """flat[offsets[r] + j] = values[i, j] for the i-th row r of `rows` and j < widths[r], in place."""
    m = col_mask(widths[rows], values.shape[1])
    r_idx, c_idx = m.nonzero(as_tuple=True)
    flat[offsets[rows][r_idx] + c_idx] = values[r_idx, c_idx].to(flat.dtype)


def flat(rows: Tensor, offsets: Tensor, widths: Tensor, capacity: int) -> Tensor:
    """The inverse of dense: float64 [capacity], each row's first width values at its offset, zeros elsewhere."""
    out = torch.zeros(capacity, dtype=torch.float64, device=rows.device)
    scatter_rows(out, torch.arange(len(widths), device=rows.device), rows, offsets, widths)
    return out


def pooled(table: Tensor, ids: Tensor, bag_offsets: Tensor, mode: str, psw: Tensor | None):
    """(out [B, d_max], argmax [B, d_max] for "max" else None) over the dense rows `table`: sum, mean or max of
    each bag (empty bag: zeros, argmax -1), argmax the position in ids of the first maximum."""
    n, d = len(ids), table.shape[1]
    lengths = bag_offsets[1:] - bag_offsets[:-1]
    b = len(lengths)
    bag = torch.repeat_interleave(torch.arange(b, device=ids.device), lengths)
    rows = table[ids[:n]] * (psw.double()[:, None] if psw is not None else 1.0)
    if mode in ("sum", "mean"):
        out = torch.zeros(b, d, dtype=torch.float64, device=ids.device).index_add_(0, bag, rows)
        return (out / lengths.clamp(min=1).double()[:, None] if mode == "mean" else out), None
    idx = bag[:, None].expand(n, d)
    out = torch.full((b, d), float("-inf"), dtype=torch.float64, device=ids.device).scatter_reduce(
        0, idx, rows, "amax")
    k = torch.where(rows == out[bag], torch.arange(n, device=ids.device)[:, None], n)
    arg = torch.full((b, d), n, dtype=torch.int64, device=ids.device).scatter_reduce(0, idx, k, "amin")
    empty = (lengths == 0)[:, None]
    return torch.where(empty, 0.0, out), torch.where(empty, -1, arg)


def row_grads(grad: Tensor, ids: Tensor, src: Tensor | None, scale: Tensor | None, argmax: Tensor | None,
              widths: Tensor, d_max: int) -> tuple[Tensor, Tensor]:
    """(G float64 [rows, d_max], touched bool [rows]): each row's combined gradient, position k contributing
    scale[k] * grad[src[k]] over the row's width (only where argmax[src[k]] == k when argmax is given)."""
    n = len(ids)
    pos = torch.arange(n, device=ids.device)
    s = pos if src is None else src
    g = grad[s].double()
    if argmax is not None:
        g = torch.where(argmax[s] == pos[:, None], g, 0.0)
    if scale is not None:
        g = g * scale.double()[:, None]
    g = g * col_mask(widths[ids], d_max)
    G = torch.zeros(len(widths), d_max, dtype=torch.float64, device=ids.device).index_add_(0, ids, g)
    touched = torch.zeros(len(widths), dtype=torch.bool, device=ids.device)
    touched[ids] = True
    return G, touched


def flat_grad(grad, ids, src, scale, argmax, offsets, widths, capacity: int) -> Tensor:
    """The drop-in backward: the gradient of the flat buffer, float64 [capacity]."""
    G, _ = row_grads(grad, ids, src, scale, argmax, widths, grad.shape[1])
    return flat(G, offsets, widths, capacity)


def update(G: Tensor, touched: Tensor, offsets: Tensor, widths: Tensor, W: Tensor, S: list, R: Tensor | None,
           opt: str, lr: float, eps: float, b1: float, b2: float, wd: float, step: int) -> None:
    """One fused optimizer step by the contract's formulas, in place on float64 copies W (flat weight), S (flat
    per-element states) and R (float32 row state, rounded as the kernels round it), for the touched rows."""
    rows = touched.nonzero().flatten()
    d_max = G.shape[1]
    m = col_mask(widths[rows], d_max)
    gather = lambda buf: dense(buf, offsets[rows], widths[rows], d_max)  # noqa: E731
    w = gather(W)
    g = (G[rows] + wd * w) * m
    if opt == "sgd":
        w = w - lr * g
    elif opt == "adagrad":
        s = gather(S[0]) + g * g
        scatter_rows(S[0], rows, s, offsets, widths)
        w = w - lr * g / (s.sqrt() + eps)
    elif opt == "rowwise_adagrad":
        width = widths[rows].double()
        live = width > 0
        r = (R[rows].double() + ((g * g).sum(1) / width.clamp(min=1)).float().double()).float()
        R[rows] = torch.where(live, r, R[rows]).to(R.dtype)
        w = w - lr * g / (r.double().sqrt() + eps)[:, None]
    else:
        mm = b1 * gather(S[0]) + (1 - b1) * g
        vv = b2 * gather(S[1]) + (1 - b2) * g * g
        scatter_rows(S[0], rows, mm, offsets, widths)
        scatter_rows(S[1], rows, vv, offsets, widths)
        w = w - (lr / (1 - b1 ** step)) * mm / (vv.sqrt() / (1 - b2 ** step) ** 0.5 + eps)
    scatter_rows(W, rows, w, offsets, widths)
