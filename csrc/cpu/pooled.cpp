// Pooled lookup (EmbeddingBag): one output row per bag, bags processed in parallel.
#include <algorithm>
#include <string>

#include "kernels.h"

namespace pyscall::cpu {
namespace {

void check_bags(const int64_t* bag_offsets, int64_t bags, int64_t n) {
  if (bag_offsets[0] != 0 || bag_offsets[bags] != n)
    throw std::invalid_argument("bag_offsets must start at 0 and end at N = " + std::to_string(n));
  for (int64_t b = 0; b < bags; ++b)
    if (bag_offsets[b + 1] < bag_offsets[b])
      throw std::invalid_argument("bag_offsets must be non-decreasing");
}

// Sum (optionally weighted) of the bag's logical rows; only the first width entries get added.
// Both bag functions return false, leaving the bag unfinished, at a row that fails row_ok.
// The output row stays in L1 while the rows are added into it. A version that kept 64 or 128 columns
// in AVX-512 registers (masked loads, one store per bag) took 1.1-1.7x the time on a 2-core AMD EPYC:
// every row paid the loads of a whole block whatever its width, and wide tables took two passes over
// the bag (width 64, width 256, power law; one build with a run-time switch, Dec 2026).
template <typename T>
bool sum_bag(const Table<T>& t, const int64_t* ids, int64_t n, int64_t s, int64_t e, const T* psw,
             T* acc) {
  std::fill(acc, acc + t.d_max, T(0));
  for (int64_t k = s; k < e; ++k) {
    prefetch_ahead(t, ids, k, n);
    const int64_t i = ids[k];
    if (!row_ok(t, i)) return false;
    const int64_t w = t.width(i);
    const T* row = t.w + t.offset(i);
    if (psw) {
      const T c = psw[k];
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) acc[j] += c * row[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) acc[j] += row[j];
    }
  }
  return true;
}

// Elementwise max over the bag's logical rows (entries past a width are 0); am gets the position
// in ids of the first maximum. A column that has met a row's implicit zero cannot change at a later
// zero (its max is >= 0 by then, or NaN), so each row compares its zeros only on the columns that have
// met none: the work per row follows its width, not d_max.
template <typename T>
bool max_bag(const Table<T>& t, const int64_t* ids, int64_t n, int64_t s, int64_t e, T* acc,
             int64_t* am) {
  const int64_t d = t.d_max;
  if (s == e) {
    std::fill(acc, acc + d, T(0));
    std::fill(am, am + d, int64_t(-1));
    return true;
  }
  int64_t zeros_from;  // columns from here on have met a zero
  {
    prefetch_ahead(t, ids, s, n);
    const int64_t i = ids[s];
    if (!row_ok(t, i)) return false;
    const int64_t w = t.width(i);
    std::copy_n(t.w + t.offset(i), w, acc);
    std::fill(acc + w, acc + d, T(0));
    std::fill(am, am + d, s);
    zeros_from = w;
  }
  for (int64_t k = s + 1; k < e; ++k) {
    prefetch_ahead(t, ids, k, n);
    const int64_t i = ids[k];
    if (!row_ok(t, i)) return false;
    const int64_t w = t.width(i);
    const T* row = t.w + t.offset(i);
    for (int64_t j = 0; j < w; ++j) {
      const bool gt = row[j] > acc[j];
      acc[j] = gt ? row[j] : acc[j];
      am[j] = gt ? k : am[j];
    }
    for (int64_t j = w; j < zeros_from; ++j) {
      const bool gt = T(0) > acc[j];
      acc[j] = gt ? T(0) : acc[j];
      am[j] = gt ? k : am[j];
    }
    zeros_from = std::min(zeros_from, w);
  }
  return true;
}

}  // namespace

int64_t bag_end(const int64_t* bag_offsets, int64_t count, int64_t n) {
  if (count == 0 || bag_offsets[0] != 0)
    throw std::invalid_argument("offsets[0] must be 0 (the first bag starts at the first index)");
  int64_t largest = 0;
  bool decreasing = false;
  for (int64_t b = 1; b < count; ++b) {
    decreasing |= bag_offsets[b] < bag_offsets[b - 1];
    largest = std::max(largest, bag_offsets[b]);
  }
  // Past n first: without include_last_offset the caller appended n, which then looks like a decrease.
  if (largest > n)
    throw std::invalid_argument("offsets must be <= the number of indices (" + std::to_string(n) +
                                "), got " + std::to_string(largest));
  if (decreasing) throw std::invalid_argument("offsets must be non-decreasing");
  return bag_offsets[count - 1];
}

template <typename T>
void pooled(const Table<T>& t, const int64_t* ids, int64_t n, const int64_t* bag_offsets,
            int64_t bags, PoolMode mode, const T* per_sample_weights, T* out, int64_t* argmax,
            int threads) {
  check_bags(bag_offsets, bags, n);
  // Rows are checked in the single pass, as in lookup (outputs are fresh buffers).
  const int64_t d = t.d_max;
  bool bad = false;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(|| : bad)
  for (int64_t b = 0; b < bags; ++b) {
    const int64_t s = bag_offsets[b], e = bag_offsets[b + 1];
    T* acc = out + b * d;
    if (mode == PoolMode::kMax) {
      if (!max_bag(t, ids, n, s, e, acc, argmax + b * d)) bad = true;
      continue;
    }
    if (!sum_bag(t, ids, n, s, e, per_sample_weights, acc)) {
      bad = true;
      continue;
    }
    if (mode == PoolMode::kMean && e > s) {
      const T count = static_cast<T>(e - s);
      for (int64_t j = 0; j < d; ++j) acc[j] /= count;  // divide, as torch does
    }
  }
  if (bad) check_rows(t, ids, n);  // throws the error for the first bad id
}

template void pooled<float>(const Table<float>&, const int64_t*, int64_t, const int64_t*, int64_t,
                            PoolMode, const float*, float*, int64_t*, int);
template void pooled<double>(const Table<double>&, const int64_t*, int64_t, const int64_t*,
                             int64_t, PoolMode, const double*, double*, int64_t*, int);

}  // namespace pyscall::cpu
