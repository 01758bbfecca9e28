// Padded lookup: each output row is written once (the row's width values, then zeros to d_max).
#include <algorithm>

#include "kernels.h"

namespace pyscall::cpu {

template <typename T>
void lookup(const Table<T>& t, const int64_t* ids, int64_t n, T* out, int threads) {
  // Rows are checked inside the single pass (no separate pass of metadata cache misses); out is a
  // fresh buffer, so rows written before a bad one was found do not matter.
  const int64_t d = t.d_max;
  bool bad = false;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(|| : bad)
  for (int64_t k = 0; k < n; ++k) {
    prefetch_ahead(t, ids, k, n);
    const int64_t i = ids[k];
    if (!row_ok(t, i)) {
      bad = true;
      continue;
    }
    const int64_t w = t.width(i);
    T* dst = out + k * d;
    const T* src = t.w + t.offset(i);
#pragma omp simd
    for (int64_t j = 0; j < w; ++j) dst[j] = src[j];
#pragma omp simd
    for (int64_t j = w; j < d; ++j) dst[j] = T(0);
  }
  if (bad) check_rows(t, ids, n);  // throws the error for the first bad id
}

template void lookup<float>(const Table<float>&, const int64_t*, int64_t, float*, int);
template void lookup<double>(const Table<double>&, const int64_t*, int64_t, double*, int);

}  // namespace pyscall::cpu
