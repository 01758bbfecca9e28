// The read floor of an embedding kernel: one pass that loads one value from every cache line of the
// rows a batch selects, prefetching them as pyscall's CPU kernels do (into L2, `distance` ids ahead,
// metadata twice as far), with no arithmetic and nothing written. A kernel that must read those lines
// cannot take less time on the same machine with the same technique. Framework-free; built and loaded
// by bench/touch_floor.py.
#include <algorithm>
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

inline void prefetch(const void* p) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p)));  // GCC may drop __builtin_prefetch
#else
  __builtin_prefetch(p, 0, 2);
#endif
}

struct Rows {
  const int64_t* off;
  const int32_t* wid;
  int64_t uniform, d_max;
  const float* const* bufs;
  const int64_t* strides;

  int64_t offset(int64_t i) const { return uniform ? i * uniform : off[i]; }
  int64_t width(int64_t i) const { return std::min<int64_t>(uniform ? uniform : wid[i], d_max); }
  // Buffer b's row for position k, id i: at the row's offset, or at k * stride for a per-position
  // buffer (stride > 0, such as the output gradient).
  const float* row(int32_t b, int64_t k, int64_t i) const {
    return bufs[b] + (strides[b] > 0 ? k * strides[b] : offset(i));
  }
};

}  // namespace

// Positions [0, n) of ids are split into `threads` contiguous parts, one per thread. Returns the
// number of loads, one per cache line of every row in every buffer (metadata not counted); *sum
// receives the sum of the values read, so that no load can be optimised away.
extern "C" int64_t touch_rows(const int64_t* ids, int64_t n, const int64_t* off, const int32_t* wid,
                              int64_t uniform, int64_t d_max, const float* const* bufs,
                              const int64_t* strides, int32_t nbufs, int64_t distance, int32_t threads,
                              float* sum) {
  const Rows r{off, wid, uniform, d_max, bufs, strides};
  int64_t lines = 0;
  float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : lines, total)
  {
#ifdef _OPENMP
    const int64_t parts = omp_get_num_threads(), part = omp_get_thread_num();
#else
    const int64_t parts = 1, part = 0;
#endif
    const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
    for (int64_t k = begin; k < end; ++k) {
      if (!uniform && k + 2 * distance < end) {
        prefetch(off + ids[k + 2 * distance]);
        prefetch(wid + ids[k + 2 * distance]);
      }
      if (k + distance < end) {
        const int64_t i = ids[k + distance], w = r.width(i);
        for (int32_t b = 0; b < nbufs; ++b) {
          const char* p = reinterpret_cast<const char*>(r.row(b, k + distance, i));
          for (int64_t x = 0; x < 4 * w; x += 64) prefetch(p + x);
          if (w > 0) prefetch(p + 4 * w - 1);
        }
      }
      const int64_t i = ids[k], w = r.width(i);
      for (int32_t b = 0; b < nbufs; ++b) {
        const float* p = r.row(b, k, i);
        if (w == 0) continue;
        // Loads 64 bytes apart from the row's start read each of its lines once; one more reads the
        // last line when the last of them falls short of it. Counts loads, not lines, so that a test
        // can check that they are the same.
        for (int64_t j = 0; j < w; j += 16, ++lines) total += p[j];
        const std::uintptr_t last_line = reinterpret_cast<std::uintptr_t>(p + w - 1) / 64;
        if (reinterpret_cast<std::uintptr_t>(p + (w - 1) / 16 * 16) / 64 != last_line) {
          total += p[w - 1];
          ++lines;
        }
      }
    }
  }
  *sum = total;
  return lines;
}
