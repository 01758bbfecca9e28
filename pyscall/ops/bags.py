"""Bags of a pooled lookup on the host side: padding dropped as torch drops it, and each position's bag."""
from __future__ import annotations

import torch
from torch import Tensor


def drop_padding(ids: Tensor, bag_offsets: Tensor, padding_idx: int, n: int):
    """Removes padding entries from bags (torch excludes them from sums, means and maxima); n is
    bag_offsets[-1], the number of indices the bags use.

    Returns (kept ids, their bag offsets, positions kept in the original input or None if all were).
    """
    if n < ids.numel():  # (a slice costs about 2 us even when it keeps everything)
        ids = ids[:n]
    if padding_idx < 0:
        return ids, bag_offsets, None
    keep = ids != padding_idx
    if bool(keep.all()):
        return ids, bag_offsets, None
    kept_before = torch.cat([ids.new_zeros(1), keep.cumsum(0)])
    return ids[keep], kept_before[bag_offsets], keep.nonzero().squeeze(1)


def bag_positions(bag_offsets: Tensor, n: int) -> Tensor:
    """Bag index of each of the n positions."""
    counts = bag_offsets[1:] - bag_offsets[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=bag_offsets.device), counts,
                                   output_size=n)


def gradient_rows(ids, bag_offsets, mode, per_sample_weights, padding_idx):
    """(kept ids, src_index, scale) of the kernel contract for a pooled backward."""
    ids_k, offs_k, kept = drop_padding(ids, bag_offsets, padding_idx, int(bag_offsets[-1]))
    src_index = bag_positions(offs_k, ids_k.numel())
    scale = None
    if mode == "mean":
        counts = (offs_k[1:] - offs_k[:-1]).clamp_min(1)
        scale = (1.0 / counts.to(torch.float64))[src_index]
    elif per_sample_weights is not None:
        scale = per_sample_weights[: int(bag_offsets[-1])]
        scale = scale if kept is None else scale[kept]
    return ids_k, src_index, scale
