// Raw views of a ragged table and the checks every CPU kernel runs before it writes anything.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace pyscall::cpu {

// Row i is w[off[i] : off[i] + wid[i]], logically followed by zeros up to d_max. A uniform table
// (uniform > 0: every row has width `uniform` at offset i * uniform, as the arena reports) is read
// without its metadata, two cache misses less per id: on a 1M-row width-64 table the padded lookup
// took 0.78x the time, the pooled one 0.71x, the fused Adam update 0.83x and a whole module step
// 0.87x (one process, alternating, 1 thread, Dec 2026).
template <typename T>
struct Table {
  T* w;
  int64_t numel;  // length of w: every row must lie inside it
  const int64_t* off;
  const int32_t* wid;
  int64_t rows;
  int64_t d_max;
  int64_t uniform;  // 0: read off and wid

  int64_t offset(int64_t i) const { return uniform ? i * uniform : off[i]; }
  int64_t width(int64_t i) const { return uniform ? uniform : wid[i]; }
};

template <typename T>
inline bool row_ok(const Table<T>& t, int64_t i) {
  if (i < 0 || i >= t.rows) return false;
  const int64_t o = t.offset(i), w = t.width(i);
  return w >= 0 && w <= t.d_max && o >= 0 && o <= t.numel - w;
}

// One cache-line prefetch into L2, for rows read and rows about to be written alike: prefetches into
// L1 (prefetcht0 / prefetchw) run out of L1 miss buffers on random rows.
// GCC models __builtin_prefetch as free of side effects, so it finds a helper that only prefetches
// "pure" and deletes the calls to it: GCC 12 built these kernels with no prefetch at all
// (tests/test_cpu_kernels.py counts them in the built _C). Volatile asm stays.
inline void prefetch(const void* p) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p)));  // an address only: no load
#else
  __builtin_prefetch(p, 0, 2);  // GCC may drop it, as above: the prefetch test runs on x86-64 only
#endif
}

// Pulls a row into cache a few iterations before it is used: batches hit random rows of a large
// table, so each row is a fresh cache miss that the hardware prefetcher cannot predict.
// Kernels that read a row's metadata (offset, width) only in their main loop prefetch it
// kPrefetchDistance ids further ahead, so that it is cached when the row prefetch needs it.
// Integer arithmetic on the address: prefetch_ahead may pass a corrupted row's, which is only prefetched.
// The first four lines take no loop (a narrow row prefetches its last line more than once): with
// power-law widths the loop's trip count mispredicted, and without it the lookup, pooled lookup and
// fused Adam update on the power-law table took 0.92-0.98x the time, width 64 and 256 the same or
// less (A/B in one process, 1 thread, Dec 2026).
template <typename T>
inline void prefetch_row(const T* p, int64_t w) {
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p);
  const int64_t last = w * static_cast<int64_t>(sizeof(T)) - 1;  // the row's last byte
  if (last < 0) return;
  for (const int64_t b : {0, 64, 128, 192})
    prefetch(reinterpret_cast<const void*>(a + std::min(b, last)));
  for (int64_t b = 256; b <= last; b += 64) prefetch(reinterpret_cast<const void*>(a + b));
}

// 24 rows ahead: on the 2-core Intel Xeon (Dec 2026), against 8, the fused Adam update at width 64 took
// about 7% less time (6 of 7 alternating runs) and the width-256 lookup about 15% less (7 of 7), other
// kernels the same (ratios to index_select in the same process). Fewer lines per row (only a row's first 256 bytes,
// leaving the rest to the hardware prefetcher) helped the width-256 Adam update in some runs and hurt the
// width-64 lookup in others, so every line of the row is still prefetched. On a 2-core AMD EPYC,
// 40 or 64 rows ahead changed nothing on any kernel (throwaway builds, two rounds, Dec 2026).
constexpr int64_t kPrefetchDistance = 24;

// Prefetches for the main loop at position k of ids[0:n]: metadata two distances ahead (none for a
// uniform table), the row one distance ahead. Skips ids out of range: the loop reports those.
template <typename T>
inline void prefetch_metadata(const Table<T>& t, int64_t i) {
  if (!t.uniform && i >= 0 && i < t.rows) {
    prefetch(t.off + i);
    prefetch(t.wid + i);
  }
}

// Only the id is checked before its metadata is read: a branch on the metadata itself (row_ok) would
// wait for that load. A corrupted row only prefetches wrong addresses, which never fault (its width is
// capped at d_max).
template <typename T>
inline void prefetch_ahead(const Table<T>& t, const int64_t* ids, int64_t k, int64_t n) {
  if (k + 2 * kPrefetchDistance < n) prefetch_metadata(t, ids[k + 2 * kPrefetchDistance]);
  if (k + kPrefetchDistance < n) {
    const int64_t i = ids[k + kPrefetchDistance];
    if (i < 0 || i >= t.rows) return;
    const std::uintptr_t row = reinterpret_cast<std::uintptr_t>(t.w) +
                               static_cast<std::uintptr_t>(t.offset(i)) * sizeof(T);
    prefetch_row(reinterpret_cast<const T*>(row), std::min<int64_t>(t.width(i), t.d_max));
  }
}

// Ids come range-checked from the caller, but a bad id or a corrupted row must raise rather than
// read or write out of bounds. Runs serially, outside parallel regions (no throwing inside OpenMP):
// before a kernel that updates in place, or after a pass that found a row failing row_ok.
// std::out_of_range becomes IndexError and std::invalid_argument ValueError in pybind11.
template <typename T>
void check_rows(const Table<T>& t, const int64_t* ids, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    // Each id's metadata is a cache miss of its own: overlap them.
    if (k + 2 * kPrefetchDistance < n) prefetch_metadata(t, ids[k + 2 * kPrefetchDistance]);
    const int64_t i = ids[k];
    if (i < 0 || i >= t.rows)
      throw std::out_of_range("index out of range in self: id " + std::to_string(i) +
                              (t.rows ? ", valid ids are 0 to " + std::to_string(t.rows - 1)
                                      : std::string(", the table has no rows")));
    const int64_t o = t.offset(i), w = t.width(i);
    if (w < 0 || w > t.d_max || o < 0 || o > t.numel - w)
      throw std::invalid_argument("row " + std::to_string(i) + " (offset " + std::to_string(o) +
                                  ", width " + std::to_string(w) + ") lies outside the buffer of " +
                                  std::to_string(t.numel) + " elements or exceeds d_max " +
                                  std::to_string(t.d_max));
  }
}

}  // namespace pyscall::cpu
