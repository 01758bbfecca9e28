"""Every Triton kernel variant compiles to a cubin for sm_90 (H100/H200) without a GPU.

The interpreter tests cannot see GPU-only compile errors (a non-constexpr global, an unsupported dtype in a math
op, ...). Triton ships ptxas, so the full compile runs here; it runs in a subprocess because the kernel tests set
TRITON_INTERPRET=1 for this process.
"""
import os
import subprocess
import sys

import pytest


def compile_all():
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from pyscall.backends.triton import backward
    from pyscall.backends.triton._common import num_warps
    from pyscall.backends.triton.lookup import _lookup_kernel, tile as lookup_tile
    from pyscall.backends.triton.pooled import _pooled_kernel, tile as pooled_tile

    target = GPUTarget("cuda", 90, 32)

    def compile_one(fn, signature, constexprs, block):
        # At launch Triton marks pointers and integers that are multiples of 16 as such, which changes the code
        # it generates (Triton 3.6 failed only with those marks): compile as a launch with d_max 37 and 256 would.
        sig = {**signature, **{k: "constexpr" for k in constexprs}}
        plain = {k for k, p in zip(fn.arg_names, fn.params) if p.do_not_specialize_on_alignment}
        pointers = [k for k, t in signature.items() if t.startswith("*")]
        ints = [k for k, t in signature.items() if t in ("i32", "i64") and k not in plain]
        for aligned in (pointers, pointers + ints):
            attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in aligned}
            src = ASTSource(fn=fn, signature=sig, attrs=attrs,
                            constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
            assert triton.compile(src, target=target, options={"num_warps": num_warps(*block)}).asm["cubin"]

    # The tiles the launchers pick, at a wide and a narrow odd d_max.
    table = dict(offsets_ptr="*i64", widths_ptr="*i32", num_rows="i32")
    for wt, idx, d_max in (("fp32", "i32", 256), ("fp64", "i64", 37), ("fp16", "i32", 256), ("bf16", "i32", 37)):
        acc = tl.float64 if wt == "fp64" else tl.float32
        rows, cols = lookup_tile(d_max)
        compile_one(_lookup_kernel, dict(weight_ptr=f"*{wt}", ids_ptr="*i64", out_ptr=f"*{wt}", n=idx, d_max="i32",
                                         **table), dict(BLOCK_ROWS=rows, BLOCK_D=cols), (rows, cols))
        k, cols = pooled_tile(d_max)
        for mode, psw in ((0, True), (1, False), (2, False)) if wt in ("fp32", "fp64") else ((2, False),):
            compile_one(_pooled_kernel, dict(weight_ptr=f"*{wt}", ids_ptr="*i64", bag_ptr="*i64", psw_ptr=f"*{wt}",
                                             out_ptr=f"*{wt}", argmax_ptr="*i64" if mode == 2 else f"*{wt}",
                                             n=idx, d_max="i32", **table),
                        dict(MODE=mode, HAS_PSW=psw, ACC=acc, BLOCK_K=k, BLOCK_D=cols), (k, cols))
    for wt, d_max in (("fp32", 256), ("fp64", 37)):
        acc = tl.float64 if wt == "fp64" else tl.float32
        for opt in range(5):
            rows, cols = backward.tile(tl.constexpr(opt), d_max)
            for has_src, has_scale, has_argmax in ((False, False, False), (True, True, True)):
                compile_one(backward._backward_kernel, dict(
                    grad_ptr=f"*{wt}", grad_stride="i32", perm_ptr="*i64", src_ptr="*i64", scale_ptr=f"*{wt}",
                    argmax_ptr="*i64", sorted_ptr="*i64", seg_end_ptr="*i64", n="i32", weight_ptr=f"*{wt}",
                    out_ptr=f"*{wt}", s1_ptr=f"*{wt}", s2_ptr=f"*{wt}", row_state_ptr="*fp32", hp_ptr=f"*{wt}",
                    **table),
                    dict(OPT=opt, HAS_SRC=has_src, HAS_SCALE=has_scale, HAS_ARGMAX=has_argmax, ACC=acc,
                         BLOCK_ROWS=rows, BLOCK_D=cols), (rows, cols))


@pytest.mark.slow  # about 80 s of CPU for 60 compiles
def test_kernels_compile_for_sm90(tmp_path):
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # a real compile, not a cache hit
    proc = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


if __name__ == "__main__":
    compile_all()
