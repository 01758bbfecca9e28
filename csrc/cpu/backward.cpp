// Backward: per-row gradients combined over duplicate ids in position order (sorted segments, no
// atomics), then either written into a dense flat gradient or applied by a fused optimizer step.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels.h"
#include "optimizers.h"
#include "segments.h"

namespace pyscall::cpu {
namespace {

template <typename T>
void check_sources(const Table<T>& t, const int64_t* ids, int64_t n, const GradSource<T>& src) {
  check_rows(t, ids, n);
  if (!src.src_index) {
    // n == 0: nothing is read, and an empty src_index arrives as a null address (data_ptr() of an
    // empty tensor), so it must not be taken for None.
    if (n > 0 && src.m != n) throw std::invalid_argument("grad_src must have N rows when src_index is None");
    return;
  }
  for (int64_t k = 0; k < n; ++k)
    if (src.src_index[k] < 0 || src.src_index[k] >= src.m)
      throw std::out_of_range("src_index out of range of grad_src's rows");
}

// acc[0:w] = sum over the segment's positions k, in order, of position k's gradient row.
template <typename T>
void combine(const GradSource<T>& s, int64_t d, const int64_t* pos, int64_t count, int64_t w,
             T* acc) {
  for (int64_t c = 0; c < count; ++c) {
    const int64_t k = pos[c];
    const int64_t r = s.src_index ? s.src_index[k] : k;
    const T* g = s.grad + r * d;
    const T sc = s.scale ? s.scale[k] : T(1);
    if (s.argmax) {
      const int64_t* am = s.argmax + r * d;
      if (c == 0) {
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) acc[j] = am[j] == k ? sc * g[j] : T(0);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < w; ++j) acc[j] += am[j] == k ? sc * g[j] : T(0);
      }
    } else if (c == 0) {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) acc[j] = sc * g[j];
    } else {
#pragma omp simd
      for (int64_t j = 0; j < w; ++j) acc[j] += sc * g[j];
    }
  }
}

template <typename T>
void prefetch_segment(const Table<T>& t, const GradSource<T>& s, const Segments& seg, int64_t u,
                      const T* state0, const T* state1) {
  const int64_t i = seg.row[u], w = t.width(i);
  prefetch_row(t.w + t.offset(i), w);
  if (state0) prefetch_row(state0 + t.offset(i), w);
  if (state1) prefetch_row(state1 + t.offset(i), w);
  const int64_t k = seg.pos[seg.start[u]];
  prefetch_row(s.grad + (s.src_index ? s.src_index[k] : k) * t.d_max, w);
}

}  // namespace

template <typename T>
void flat_grad(const Table<T>& t, const int64_t* ids, int64_t n, const GradSource<T>& src,
               T* out, int threads) {
  check_sources(t, ids, n, src);
  const Segments seg = group_by_row(ids, n, t.rows);
  const int64_t U = seg.size();
#pragma omp parallel num_threads(threads)
  {
    // The dense zero fill is the O(capacity) part of drop-in mode; split it across threads.
#pragma omp for schedule(static)
    for (int64_t e = 0; e < t.numel; ++e) out[e] = T(0);
#pragma omp for schedule(static)
    for (int64_t u = 0; u < U; ++u) {
      const int64_t i = seg.row[u];
      combine(src, t.d_max, seg.pos.data() + seg.start[u], seg.start[u + 1] - seg.start[u],
              int64_t(t.width(i)), out + t.offset(i));
    }
  }
}

template <typename T>
void fused_update(const Table<T>& t, const int64_t* ids, int64_t n, const GradSource<T>& src,
                  T* state0, T* state1, float* row_state, const OptimizerArgs& opt, int threads) {
  check_sources(t, ids, n, src);
  const Segments seg = group_by_row(ids, n, t.rows);
  const int64_t U = seg.size();
  const T lr = static_cast<T>(opt.lr), eps = static_cast<T>(opt.eps);
  const T wd = static_cast<T>(opt.weight_decay);
  const T b1 = static_cast<T>(opt.beta1), b2 = static_cast<T>(opt.beta2);
  const T step_size = static_cast<T>(opt.lr / (1.0 - std::pow(opt.beta1, double(opt.step))));
  const T bc2_sqrt = static_cast<T>(std::sqrt(1.0 - std::pow(opt.beta2, double(opt.step))));
  bool simd = false;
  if constexpr (std::is_same_v<T, float>) simd = have_avx2_fma();
  // Position k's gradient is grad row k itself (padded lookups without padding_idx).
  const bool plain = !src.src_index && !src.scale && !src.argmax;
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> g(t.d_max);
#pragma omp for schedule(static)
    for (int64_t u = 0; u < U; ++u) {
      // The metadata check_rows read has left the cache by now (the rows streamed through it): a
      // perf profile put a quarter of this loop's samples on those loads before this prefetch.
      if (u + 2 * kPrefetchDistance < U) prefetch_metadata(t, seg.row[u + 2 * kPrefetchDistance]);
      if (u + kPrefetchDistance < U)
        prefetch_segment(t, src, seg, u + kPrefetchDistance, state0, state1);
      const int64_t i = seg.row[u], w = t.width(i);
      if (w == 0) continue;
      const int64_t o = t.offset(i);
      T* wr = t.w + o;
      const int64_t first = seg.start[u], count = seg.start[u + 1] - first;
      const T* gr;  // the row's combined gradient
      if (count == 1 && plain && wd == T(0)) {
        gr = src.grad + seg.pos[first] * t.d_max;  // most rows occur once: no copy
      } else {
        combine(src, t.d_max, seg.pos.data() + first, count, w, g.data());
        add_weight_decay(g.data(), wr, w, wd);
        gr = g.data();
      }
      switch (opt.kind) {
        case Optimizer::kSgd: sgd_row(wr, gr, w, lr); break;
        case Optimizer::kAdagrad:
          if constexpr (std::is_same_v<T, float>)
            if (simd) {
              adagrad_row_avx2(wr, state0 + o, gr, w, lr, eps);
              break;
            }
          adagrad_row(wr, state0 + o, gr, w, lr, eps);
          break;
        case Optimizer::kRowwiseAdagrad:
          rowwise_adagrad_row(wr, row_state + i, gr, w, lr, eps);
          break;
        case Optimizer::kAdam:
          if constexpr (std::is_same_v<T, float>)
            if (simd) {
              adam_row_avx2(wr, state0 + o, state1 + o, gr, w, b1, b2, step_size, bc2_sqrt, eps);
              break;
            }
          adam_row(wr, state0 + o, state1 + o, gr, w, b1, b2, step_size, bc2_sqrt, eps);
          break;
      }
    }
  }
}

#define PYSCALL_INSTANTIATE(T)                                                                  \
  template void flat_grad<T>(const Table<T>&, const int64_t*, int64_t, const GradSource<T>&, T*, \
                             int);                                                              \
  template void fused_update<T>(const Table<T>&, const int64_t*, int64_t, const GradSource<T>&,  \
                                T*, T*, float*, const OptimizerArgs&, int);
PYSCALL_INSTANTIATE(float)
PYSCALL_INSTANTIATE(double)
#undef PYSCALL_INSTANTIATE

}  // namespace pyscall::cpu
