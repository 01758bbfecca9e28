"""Tile sizes of the Triton ops on a GPU: each op timed (CUDA events) at several (rows or bag positions per
program, columns per program, warps), its output checked against the shipped tile's. Used to pick the
defaults in pyscall/backends/triton/ (row_tile / num_warps callers); rerun it on a new card.

    python bench/gpu_tile_sweep.py               (on the GPU: 1,000,000 rows, 262,144 ids, bags of 32)
    python bench/gpu_tile_sweep.py --cpu-dry-run (tiny sizes on the CPU under TRITON_INTERPRET=1)
"""
import argparse
import os
import sys

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--cpu-dry-run", action="store_true")
ARGS = ARGS.parse_args()
if ARGS.cpu_dry_run:
    os.environ["TRITON_INTERPRET"] = "1"  # before anything imports triton

import torch  # noqa: E402
import triton  # noqa: E402

import pyscall.backends.triton as K  # noqa: E402
import pyscall.backends.triton.backward as B  # noqa: E402
from pyscall.backends.triton.lookup import _lookup_kernel, tile as lookup_tile  # noqa: E402
from pyscall.backends.triton.pooled import _pooled_kernel, tile as pooled_tile  # noqa: E402
from pyscall.backends.triton._common import acc_dtype, num_warps  # noqa: E402
from bench_embedding import power_law_widths  # noqa: E402
from gpu_timer import mean_ms  # noqa: E402

DEV = torch.device("cpu" if ARGS.cpu_dry_run else "cuda")
D_MAX = 256


def with_warps(block):
    return (*block, num_warps(*block))


TILES = {  # (rows or bag positions, columns, warps); the first is the shipped default
    "lookup": [with_warps(lookup_tile(D_MAX)), (16, 256, 8), (4, 256, 2), (1, 256, 1), (8, 128, 2)],
    "pooled": [with_warps(pooled_tile(D_MAX)), (16, 128, 4), (8, 256, 2), (16, 256, 4), (32, 64, 2)],
    "backward": [with_warps(B.tile(B.ADAM, D_MAX)), (32, 64, 4), (8, 64, 2), (2, 128, 1), (1, 256, 1), (4, 256, 4)],
    "rowwise": [with_warps(B.tile(B.ROWWISE_ADAGRAD, D_MAX)), (16, 256, 8), (4, 256, 4), (2, 256, 2), (1, 256, 2)],
}


def sweep(label, op, tiles, run, iters):
    """run(tile, fresh) -> output tensor (fresh: from the starting table and state, for the check); prints ms
    per tile and the largest difference from the first tile's output."""
    first, bad = None, 0
    for t in tiles:
        out = run(t, True)
        first = out.clone() if first is None else first
        # Values are O(1); a pooled sum of 32 of them in another order may differ by a few float32 ulps of
        # its terms, which a relative tolerance misses where the sum cancels.
        diff = (out - first).abs().max().item() if out.numel() else 0.0
        ok = diff <= 1e-4
        bad += not ok
        # The dry run only exercises the script: one call, no warm-up.
        ms = mean_ms(lambda: run(t, False), iters, DEV, warmup=0 if ARGS.cpu_dry_run else 3)
        print(f"{label:<9} {op:<16} {t[0]:>4} {t[1]:>4} {t[2]:>5} {ms:9.3f}  {diff:9.1e}  "
              f"{'ok' if ok else 'MISMATCH'}", flush=True)
    return bad


def main():
    rows, n, bag, iters = (500, 64, 8, 1) if ARGS.cpu_dry_run else (1_000_000, 262_144, 32, 20)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    card = "CPU (dry run)" if DEV.type != "cuda" else torch.cuda.get_device_name()
    print(f"{card} | torch {torch.__version__} | triton {triton.__version__} | {rows:,} rows, {n:,} ids, "
          f"bags of {bag}, d_max {D_MAX}, mean of {iters} calls; first tile of each op is the default")
    print(f"{'widths':<9} {'op':<16} {'rows':>4} {'cols':>4} {'warps':>5} {'ms':>9}  {'max |diff|':>9}")
    bad = 0
    for label, widths in (("mean 16", power_law_widths(rows, 16, D_MAX)),
                          ("all 256", torch.full((rows,), D_MAX, dtype=torch.int32))):
        widths = widths.to(torch.int32)
        offsets = (torch.cumsum(widths.long(), 0) - widths.long()).to(DEV)
        cap = int(widths.long().sum())
        widths = widths.to(DEV)
        w0 = torch.randn(cap, generator=gen).to(DEV)
        ids = torch.randint(0, rows, (n,), generator=gen).to(DEV)
        grad = torch.randn(n, D_MAX, generator=gen).to(DEV)
        bags = torch.arange(0, n + 1, bag, device=DEV)
        out = torch.empty(n, D_MAX, device=DEV)
        pooled_out = torch.empty(bags.numel() - 1, D_MAX, device=DEV)

        def run_lookup(t, fresh):
            _lookup_kernel[(triton.cdiv(n, t[0]), triton.cdiv(D_MAX, t[1]))](
                w0, offsets, widths, ids, out, n, rows, D_MAX, BLOCK_ROWS=t[0], BLOCK_D=t[1], num_warps=t[2])
            return out

        def run_pooled(t, fresh):
            _pooled_kernel[(bags.numel() - 1, triton.cdiv(D_MAX, t[1]))](
                w0, offsets, widths, ids, bags, w0, pooled_out, pooled_out, n, rows, D_MAX, MODE=0, HAS_PSW=False,
                ACC=acc_dtype(w0.dtype), BLOCK_K=t[0], BLOCK_D=t[1], num_warps=t[2])
            return pooled_out

        bad += sweep(label, "lookup", TILES["lookup"], run_lookup, iters)
        bad += sweep(label, "pooled sum", TILES["pooled"], run_pooled, iters)
        # Hyper-parameters in the launcher's order: lr, eps, beta1, beta2, weight_decay, lr / bc1, sqrt(bc2).
        hp = torch.tensor([0.01, 1e-8, 0.9, 0.999, 0.0, 0.01 / 0.1, 0.001 ** 0.5], device=DEV)
        for name, opt in (("flat_grad", B.FLAT), ("sgd", B.SGD), ("adam", B.ADAM),
                          ("rowwise_adagrad", B.ROWWISE_ADAGRAD)):
            w = w0.clone()
            state = [torch.zeros(cap, device=DEV) for _ in range(2)]
            row_state = torch.zeros(rows, device=DEV)

            def step(t, fresh):
                if opt.value == B.FLAT.value:
                    flat = torch.zeros(cap, device=DEV)
                    B._launch(opt, grad, ids, None, None, None, offsets, widths, flat, flat, None, None, None, None,
                              block=t)
                    return flat
                if fresh:  # the check compares one step from the same starting table and state
                    w.copy_(w0)
                    for s in (*state, row_state):
                        s.zero_()
                B._launch(opt, grad, ids, None, None, None, offsets, widths, w, w, state[0], state[1], row_state,
                          hp, block=t)
                return w

            tiles = TILES["rowwise" if name == "rowwise_adagrad" else "backward"]
            bad += sweep(label, name, tiles, step, iters)
    print(f"{bad} mismatch(es)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
