// Padded lookup: each output row is written once (the row's width values, then zeros to d_max).
#include <algorithm>

#include "kernels.h"

namespace pyscall::cpu {

template <typename T>
void lookup(const Table<T>& t, const int64_t* ids, int64_t n, T* out, int threads) {
  check_rows(t, ids, n);
  const int64_t d = t.d_max;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t k = 0; k < n; ++k) {
    if (k + kPrefetchDistance < n) {
      const int64_t ip = ids[k + kPrefetchDistance];
      prefetch_row(t.w + t.off[ip], t.wid[ip], 0);
    }
    const int64_t i = ids[k];
    const int64_t w = t.wid[i];
    T* dst = out + k * d;
    std::copy_n(t.w + t.off[i], w, dst);
    std::fill(dst + w, dst + d, T(0));
  }
}

template void lookup<float>(const Table<float>&, const int64_t*, int64_t, float*, int);
template void lookup<double>(const Table<double>&, const int64_t*, int64_t, double*, int);

}  // namespace pyscall::cpu
