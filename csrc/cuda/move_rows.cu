// Arena data movement on the GPU: one launch moves every row of a layout step.
// Move m copies copy[m] elements from src_buf[src[m]:] to dst_buf[dst[m]:] and zero-fills dst[copy[m]:total[m]].
// The copy is bitwise, so only the element size matters (2, 4 or 8 bytes).
#include "cuda/move_rows.h"

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace cg = cooperative_groups;

namespace {

constexpr int kGroup = 8;    // lanes per move: 8 x 16 B covers a 32-float row in one pass, wide rows loop
constexpr int kBlock = 256;  // 32 moves in flight per block
constexpr int kVecBytes = 16;

template <typename T>
__device__ void group_copy(const cg::thread_block_tile<kGroup>& g, T* d, const T* s, int64_t n) {
  constexpr int V = kVecBytes / sizeof(T);
  const int lane = g.thread_rank();
  const auto da = reinterpret_cast<uintptr_t>(d);
  const auto sa = reinterpret_cast<uintptr_t>(s);
  if (((da ^ sa) % kVecBytes) == 0 && n >= 2 * V) {
    // Same misalignment on both sides: scalar head, 16-byte body, scalar tail.
    const int64_t head = static_cast<int64_t>((kVecBytes - da % kVecBytes) % kVecBytes) / sizeof(T);
    const int64_t nvec = (n - head) / V;
    for (int64_t i = lane; i < head; i += kGroup) d[i] = s[i];
    const uint4* sv = reinterpret_cast<const uint4*>(s + head);
    uint4* dv = reinterpret_cast<uint4*>(d + head);
    for (int64_t i = lane; i < nvec; i += kGroup) dv[i] = sv[i];
    for (int64_t i = head + nvec * V + lane; i < n; i += kGroup) d[i] = s[i];
  } else {
    for (int64_t i = lane; i < n; i += kGroup) d[i] = s[i];
  }
}

template <typename T>
__device__ void group_zero(const cg::thread_block_tile<kGroup>& g, T* d, int64_t n) {
  constexpr int V = kVecBytes / sizeof(T);
  const int lane = g.thread_rank();
  const auto da = reinterpret_cast<uintptr_t>(d);
  const int64_t head = n < 2 * V ? n : static_cast<int64_t>((kVecBytes - da % kVecBytes) % kVecBytes) / sizeof(T);
  const int64_t nvec = (n - head) / V;
  for (int64_t i = lane; i < head; i += kGroup) d[i] = T(0);
  uint4* dv = reinterpret_cast<uint4*>(d + head);
  for (int64_t i = lane; i < nvec; i += kGroup) dv[i] = make_uint4(0, 0, 0, 0);
  for (int64_t i = head + nvec * V + lane; i < n; i += kGroup) d[i] = T(0);
}

// A row moved onto itself shifted (source and destination overlap, same buffer): memmove order, one chunk of
// kGroup elements at a time, every lane loading before any lane stores.
template <typename T>
__device__ void group_overlapping_copy(const cg::thread_block_tile<kGroup>& g, T* d, const T* s, int64_t n) {
  const int lane = g.thread_rank();
  const int64_t chunks = (n + kGroup - 1) / kGroup;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t base = (d > s ? chunks - 1 - c : c) * kGroup;
    const int64_t i = base + lane;
    T v = i < n ? s[i] : T(0);
    g.sync();
    if (i < n) d[i] = v;
    g.sync();
  }
}

template <typename T>
__global__ void move_rows_kernel(const T* src_buf, T* dst_buf, int64_t src_len, int64_t dst_len,
                                 const int64_t* __restrict__ src, const int64_t* __restrict__ dst,
                                 const int64_t* __restrict__ copy, const int64_t* __restrict__ total,
                                 int64_t n_moves) {
  const auto g = cg::tiled_partition<kGroup>(cg::this_thread_block());
  const int64_t groups = static_cast<int64_t>(gridDim.x) * (kBlock / kGroup);
  for (int64_t m = static_cast<int64_t>(blockIdx.x) * (kBlock / kGroup) + threadIdx.x / kGroup; m < n_moves;
       m += groups) {
    const int64_t s = src[m], d = dst[m], c = copy[m], t = total[m];
    // The Python wrapper validates plans; this guard only makes a bad move a no-op instead of a stray write.
    if (s < 0 || d < 0 || c < 0 || c > t || s > src_len - c || d > dst_len - t) continue;
    const T* sp = src_buf + s;
    T* dp = dst_buf + d;
    if (static_cast<const void*>(sp) != static_cast<const void*>(dp)) {
      if (dp < sp + c && sp < dp + c) {
        group_overlapping_copy(g, dp, sp, c);
      } else {
        group_copy(g, dp, sp, c);
      }
    }
    g.sync();  // the zero-fill may cover source elements this group has just read
    group_zero(g, dp + c, t - c);
  }
}

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("pyscall CUDA move_rows: ") + what + ": " + cudaGetErrorString(err));
  }
}

template <typename T>
void launch(uint64_t src_buf, uint64_t dst_buf, int64_t src_len, int64_t dst_len, uint64_t src, uint64_t dst,
            uint64_t copy, uint64_t total, int64_t n_moves, cudaStream_t stream) {
  const int64_t per_block = kBlock / kGroup;
  const int64_t blocks = (n_moves + per_block - 1) / per_block;
  const unsigned grid = static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20));  // grid-stride beyond
  move_rows_kernel<T><<<grid, kBlock, 0, stream>>>(
      reinterpret_cast<const T*>(src_buf), reinterpret_cast<T*>(dst_buf), src_len, dst_len,
      reinterpret_cast<const int64_t*>(src), reinterpret_cast<const int64_t*>(dst),
      reinterpret_cast<const int64_t*>(copy), reinterpret_cast<const int64_t*>(total), n_moves);
  check(cudaGetLastError(), "kernel launch");
}

}  // namespace

void cuda_move_rows(uint64_t src_buf, uint64_t dst_buf, int elem_size, int64_t src_len, int64_t dst_len,
                    uint64_t src, uint64_t dst, uint64_t copy, uint64_t total, int64_t n_moves, uint64_t stream) {
  if (elem_size != 2 && elem_size != 4 && elem_size != 8) {
    throw std::invalid_argument("elem_size must be 2, 4 or 8, got " + std::to_string(elem_size));
  }
  if (n_moves < 0 || src_len < 0 || dst_len < 0) {
    throw std::invalid_argument("n_moves, src_len and dst_len must be >= 0");
  }
  if (n_moves == 0) return;
  if (!src_buf || !dst_buf || !src || !dst || !copy || !total) {
    throw std::invalid_argument("cuda_move_rows: null device pointer");
  }
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  switch (elem_size) {
    case 2: launch<uint16_t>(src_buf, dst_buf, src_len, dst_len, src, dst, copy, total, n_moves, s); break;
    case 4: launch<uint32_t>(src_buf, dst_buf, src_len, dst_len, src, dst, copy, total, n_moves, s); break;
    default: launch<uint64_t>(src_buf, dst_buf, src_len, dst_len, src, dst, copy, total, n_moves, s); break;
  }
}

bool cuda_device_available() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}
