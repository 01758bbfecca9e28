// CPU replay of a Plan on flat buffers, in place.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "arena/plan.h"

#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pyscall {

namespace {

// Below this many moves a step runs on one thread: thread start-up would cost
// more than it saves.
constexpr size_t kParallelMoves = 4096;

// Moves a row: nc bytes from s to d with memmove semantics (skipped when d == s), then zeroes
// d[nc:nt].
#if defined(__AVX512BW__)
// Bytes [b, n) of the 64-byte chunk at b, as a mask (empty when b >= n).
inline __mmask64 chunk_mask(int64_t b, int64_t n) {
  return _bzhi_u64(~0ULL, static_cast<unsigned>(std::clamp<int64_t>(n - b, 0, 64)));
}

inline void copy_chunk(char* d, const char* s, int64_t b, int64_t n) {
  const __mmask64 m = chunk_mask(b, n);
  _mm512_mask_storeu_epi8(d + b, m, _mm512_maskz_loadu_epi8(m, s + b));
}

// Row widths are random, so a branch on a row's size mispredicts often. Rows of up to 128 bytes, most of them, take two masked 64-byte chunks
// unconditionally (an empty mask stores nothing); longer rows loop. Each chunk is loaded before it
// is stored, ascending when moving left and descending when moving right.
inline void move_row_bytes(char* d, const char* s, int64_t nc, int64_t nt) {
  if (d < s) {
    copy_chunk(d, s, 0, nc);
    copy_chunk(d, s, 64, nc);
    for (int64_t b = 128; b < nc; b += 64) copy_chunk(d, s, b, nc);
  } else if (d > s) {
    for (int64_t b = (nc - 1) & ~int64_t(63); b >= 128; b -= 64) copy_chunk(d, s, b, nc);
    copy_chunk(d, s, 64, nc);
    copy_chunk(d, s, 0, nc);
  }
  const __m512i zero = _mm512_setzero_si512();
  _mm512_mask_storeu_epi8(d + nc, chunk_mask(nc, nt), zero);
  _mm512_mask_storeu_epi8(d + nc + 64, chunk_mask(nc + 64, nt), zero);
  for (int64_t b = nc + 128; b < nt; b += 64) _mm512_mask_storeu_epi8(d + b, chunk_mask(b, nt), zero);
}
#else
// Copies [s, s + n) to d for K <= n <= 2K as two K-byte halves, loading both
// before storing either, so overlap is harmless.
template <size_t K>
inline void move_halves(char* d, const char* s, size_t n) {
  char head[K], tail[K];
  std::memcpy(head, s, K);
  std::memcpy(tail, s + n - K, K);
  std::memcpy(d, head, K);
  std::memcpy(d + n - K, tail, K);
}

// memmove without a library call for short rows (most rows are a few dozen
// bytes, and a call per row costs as much as the copy).
inline void move_bytes(char* d, const char* s, size_t n) {
  if (n > 64 || n < 4) std::memmove(d, s, n);
  else if (n > 32) move_halves<32>(d, s, n);
  else if (n > 16) move_halves<16>(d, s, n);
  else if (n > 8) move_halves<8>(d, s, n);
  else move_halves<4>(d, s, n);
}

template <size_t K>
inline void zero_halves(char* d, size_t n) {
  static constexpr char kZero[K] = {};
  std::memcpy(d, kZero, K);
  std::memcpy(d + n - K, kZero, K);
}

// Zeroes [d, d + n), short runs without a library call.
inline void zero_bytes(char* d, size_t n) {
  if (n > 64 || n < 4) std::memset(d, 0, n);
  else if (n > 32) zero_halves<32>(d, n);
  else if (n > 16) zero_halves<16>(d, n);
  else if (n > 8) zero_halves<8>(d, n);
  else zero_halves<4>(d, n);
}

inline void move_row_bytes(char* d, const char* s, int64_t nc, int64_t nt) {
  if (nc > 0 && d != s) move_bytes(d, s, nc);
  if (nt > nc) zero_bytes(d + nc, nt - nc);
}
#endif

inline void move_row(char* base, int64_t es, int64_t src, int64_t dst, int64_t copy,
                     int64_t total) {
  move_row_bytes(base + dst * es, base + src * es, copy * es, total * es);
}

// An ordered step in parallel: one chunk of consecutive moves per thread.
// Running chunks at once is unsafe only where a later chunk writes what an
// earlier chunk still reads (a plan never reads what an earlier move wrote,
// and destinations are disjoint). Those "seam" rows are detected with the
// read span of all earlier chunks, their sources staged in a scratch buffer
// first, and written last. A re-layout sweeps the buffer upwards, so its
// seams are the few rows near chunk edges.
struct Schedule {
  std::vector<size_t> chunk_begin;  // one per chunk, plus the end; size 2 = sequential
  std::vector<size_t> seams;        // ascending indices
  int64_t staged = 0;               // elements staged for the seams
};

Schedule schedule_ordered(const Step& s, int threads) {
  const size_t k = s.size();
  Schedule p{{0, k}, {}, 0};
  if (threads < 2 || k < kParallelMoves) return p;
  std::vector<size_t> cb(threads + 1);
  for (int c = 0; c <= threads; ++c) cb[c] = k * c / threads;
  int64_t lo = INT64_MAX, hi = INT64_MIN, moved = 0;
  for (int c = 0; c < threads; ++c) {
    for (size_t r = cb[c]; r < cb[c + 1]; ++r) {
      moved += s.total[r];
      if (c > 0 && s.dst[r] < hi && s.dst[r] + s.total[r] > lo) {
        p.seams.push_back(r);
        p.staged += s.copy[r];
      }
    }
    for (size_t r = cb[c]; r < cb[c + 1]; ++r)
      if (s.copy[r] > 0) {
        lo = std::min(lo, s.src[r]);
        hi = std::max(hi, s.src[r] + s.copy[r]);
      }
  }
  // Staging much of the step would cost more than the parallelism gains.
  if (p.staged * 8 <= moved) {
    p.chunk_begin = std::move(cb);
  } else {
    p.seams.clear();
    p.staged = 0;
  }
  return p;
}

void run_ordered(const Step& s, const Schedule& p, const Buffer& b, std::vector<char>& scratch) {
  char* base = b.data;
  const int64_t es = b.elem_size;
  const int chunks = static_cast<int>(p.chunk_begin.size()) - 1;
  if (chunks == 1) {
    for (size_t r = 0; r < s.size(); ++r)
      move_row(base, es, s.src[r], s.dst[r], s.copy[r], s.total[r]);
    return;
  }
  scratch.resize(static_cast<size_t>(p.staged * es));
  int64_t at = 0;
  for (size_t r : p.seams) {
    std::memcpy(scratch.data() + at * es, base + s.src[r] * es, s.copy[r] * es);
    at += s.copy[r];
  }
#pragma omp parallel for num_threads(chunks) schedule(static, 1)
  for (int c = 0; c < chunks; ++c) {
    auto seam = std::lower_bound(p.seams.begin(), p.seams.end(), p.chunk_begin[c]);
    for (size_t r = p.chunk_begin[c]; r < p.chunk_begin[c + 1]; ++r) {
      if (seam != p.seams.end() && *seam == r) {
        ++seam;
        continue;
      }
      move_row(base, es, s.src[r], s.dst[r], s.copy[r], s.total[r]);
    }
  }
  at = 0;
  for (size_t r : p.seams) {
    std::memcpy(base + s.dst[r] * es, scratch.data() + at * es, s.copy[r] * es);
    if (s.total[r] > s.copy[r])
      std::memset(base + (s.dst[r] + s.copy[r]) * es, 0, (s.total[r] - s.copy[r]) * es);
    at += s.copy[r];
  }
}

void run_unordered(const Step& s, const Buffer& b, int threads) {
  const int64_t k = static_cast<int64_t>(s.size());
  const int t = k >= static_cast<int64_t>(kParallelMoves) ? threads : 1;
#pragma omp parallel for num_threads(t) schedule(static)
  for (int64_t r = 0; r < k; ++r)
    move_row(b.data, b.elem_size, s.src[r], s.dst[r], s.copy[r], s.total[r]);
}

// Elements a buffer must hold to be read (first) and written (second) by the plan.
std::pair<int64_t, int64_t> plan_extent(const Plan& plan) {
  int64_t read = 0, written = 0;
  for (const Step& s : plan.steps) {
    const size_t k = s.size();
    if (s.dst.size() != k || s.copy.size() != k || s.total.size() != k)
      throw std::invalid_argument("plan step arrays differ in length");
    read = std::max(read, s.read_end);
    written = std::max(written, s.write_end);
  }
  return {read, written};
}

void check_fits(const std::vector<Buffer>& buffers, int64_t need, const char* what) {
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (buffers[i].elem_size < 1) throw std::invalid_argument("buffer element size must be >= 1");
    if (buffers[i].numel < need)
      throw std::out_of_range(std::string(what) + " buffer " + std::to_string(i) + " holds " +
                              std::to_string(buffers[i].numel) + " elements but the plan touches " +
                              std::to_string(need));
  }
}

}  // namespace

void apply_plan_cpu(const Plan& plan, const std::vector<Buffer>& buffers, int num_threads) {
  const auto [read, written] = plan_extent(plan);
  check_fits(buffers, std::max(read, written), "plan");
#ifdef _OPENMP
  const int threads = std::max(1, num_threads);
#else
  const int threads = 1;
#endif
  std::vector<char> scratch;
  for (const Step& s : plan.steps) {
    if (!s.ordered) {
      for (const Buffer& b : buffers) run_unordered(s, b, threads);
      continue;
    }
    const Schedule p = schedule_ordered(s, threads);
    for (const Buffer& b : buffers) run_ordered(s, p, b, scratch);
  }
}

void apply_relayout_cpu(const Plan& plan, const std::vector<Buffer>& from,
                        const std::vector<Buffer>& to, int num_threads) {
  if (plan.steps.size() > 1 || (plan.steps.size() == 1 && !plan.steps[0].ordered))
    throw std::invalid_argument("out-of-place replay needs a plan of one ordered step");
  if (from.size() != to.size()) throw std::invalid_argument("from and to differ in length");
  for (size_t i = 0; i < from.size(); ++i)
    if (from[i].elem_size != to[i].elem_size)
      throw std::invalid_argument("from and to buffer " + std::to_string(i) +
                                  " differ in element size");
  const auto [read, written] = plan_extent(plan);
  check_fits(from, read, "source");
  check_fits(to, written, "destination");
  if (plan.steps.empty()) return;
  const Step& s = plan.steps[0];
  const int64_t k = static_cast<int64_t>(s.size());
  const int t = k >= static_cast<int64_t>(kParallelMoves) ? std::max(1, num_threads) : 1;
  for (size_t i = 0; i < from.size(); ++i) {
    const char* src = from[i].data;
    char* dst = to[i].data;
    const int64_t es = from[i].elem_size;
#pragma omp parallel for num_threads(t) schedule(static)
    for (int64_t r = 0; r < k; ++r) {
      move_row_bytes(dst + s.dst[r] * es, src + s.src[r] * es, s.copy[r] * es, s.total[r] * es);
    }
  }
}

}  // namespace pyscall
