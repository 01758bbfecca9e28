"""Timing shared by the GPU bench scripts (device_check.py, gpu_tile_sweep.py)."""
import time

import torch


def mean_ms(fn, iters, device, warmup=3):
    """Mean milliseconds per call: CUDA events on a GPU (no graphs), wall clock on the CPU."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters
