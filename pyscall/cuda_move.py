"""Arena data movement on the GPU: a torch wrapper around the CUDA kernel `_C.cuda_move_rows`.

A layout step is a list of moves (src, dst, copy, total): copy `copy` elements from src_buf[src:] to
dst_buf[dst:], then zero-fill dst_buf[dst + copy : dst + total]. An unordered step (independent moves) runs in
place (src_buf is dst_buf); an ordered step runs out of place into a fresh buffer that the caller then swaps in.
"""
import torch

from . import _C

_ELEM_SIZES = {torch.float16: 2, torch.bfloat16: 2, torch.float32: 4, torch.float64: 8,
               torch.int16: 2, torch.int32: 4, torch.int64: 8}


def _check_buffer(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA tensor, got device {t.device}")
    if t.dtype not in _ELEM_SIZES:
        raise TypeError(f"{name} must have a 2, 4 or 8-byte dtype ({', '.join(map(str, _ELEM_SIZES))}), got {t.dtype}")
    if t.dim() != 1 or not t.is_contiguous():
        raise ValueError(f"{name} must be a contiguous 1-D tensor, got shape {tuple(t.shape)}")


def move_rows(src_buf, dst_buf, src, dst, copy, total, *, validate=True):
    """Moves rows from src_buf to dst_buf on the current CUDA stream (asynchronous).

    src, dst, copy, total: int64 CUDA tensors of one length (element indices and counts). With validate=True
    (default) the plan is checked first (one host sync) and a bad plan raises IndexError before anything moves;
    with validate=False the kernel still never touches memory outside the buffers (it skips bad moves).
    """
    if not _C.with_cuda:
        raise RuntimeError("pyscall was built without CUDA (nvcc was not found at build time, or "
                           "PYSCALL_CUDA=OFF): cuda_move.move_rows is unavailable; rebuild with nvcc on PATH")
    _check_buffer("src_buf", src_buf)
    _check_buffer("dst_buf", dst_buf)
    if dst_buf.dtype != src_buf.dtype or dst_buf.device != src_buf.device:
        raise ValueError(f"dst_buf must match src_buf ({src_buf.dtype} on {src_buf.device}), "
                         f"got {dst_buf.dtype} on {dst_buf.device}")
    arrays = {"src": src, "dst": dst, "copy": copy, "total": total}
    for name, a in arrays.items():
        if not isinstance(a, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(a).__name__}")
        if a.dtype != torch.int64:
            raise TypeError(f"{name} must have dtype torch.int64, got {a.dtype}")
        if a.device != src_buf.device:
            raise ValueError(f"{name} must be on {src_buf.device} (the buffers' device), got {a.device}")
        if a.dim() != 1 or not a.is_contiguous() or a.numel() != src.numel():
            raise ValueError(f"{name} must be a contiguous 1-D tensor of {src.numel()} elements (like src), "
                             f"got shape {tuple(a.shape)}")
    n = src.numel()
    if n == 0:
        return
    if validate:
        bad = ((src < 0) | (dst < 0) | (copy < 0) | (copy > total)
               | (src + copy > src_buf.numel()) | (dst + total > dst_buf.numel()))
        if bool(bad.any()):
            m = int(bad.nonzero()[0, 0])
            raise IndexError(f"move {m} is out of range: src={int(src[m])}, dst={int(dst[m])}, copy={int(copy[m])}, "
                             f"total={int(total[m])} for buffers of {src_buf.numel()} / {dst_buf.numel()} elements "
                             f"(need 0 <= copy <= total, src + copy <= len(src_buf), dst + total <= len(dst_buf))")
    with torch.cuda.device(src_buf.device):
        stream = torch.cuda.current_stream().cuda_stream
        _C.cuda_move_rows(src_buf.data_ptr(), dst_buf.data_ptr(), _ELEM_SIZES[src_buf.dtype], src_buf.numel(),
                          dst_buf.numel(), src.data_ptr(), dst.data_ptr(), copy.data_ptr(), total.data_ptr(), n,
                          stream)
