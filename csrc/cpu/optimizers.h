// Fused per-row optimizer steps on a row's first w entries, with torch.optim's arithmetic
// (L2 weight decay folded into g first, by add_weight_decay on a scratch copy).
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels.h"

namespace pyscall::cpu {

template <typename T>
inline void add_weight_decay(T* g, const T* w, int64_t n, T wd) {
  if (wd == T(0)) return;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) g[j] += wd * w[j];
}

template <typename T>
inline void sgd_row(T* w, const T* g, int64_t n, T lr) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) w[j] -= lr * g[j];
}

template <typename T>
inline void adagrad_row(T* w, T* sum, const T* g, int64_t n, T lr, T eps) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    sum[j] += g[j] * g[j];
    w[j] -= lr * g[j] / (std::sqrt(sum[j]) + eps);
  }
}

// One float32 accumulator per row: r += mean(g^2) over the row's width.
template <typename T>
inline void rowwise_adagrad_row(T* w, float* r, const T* g, int64_t n, T lr, T eps) {
  T sq = T(0);
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < n; ++j) sq += g[j] * g[j];
  *r += static_cast<float>(sq / static_cast<T>(n));
  const T denom = std::sqrt(static_cast<T>(*r)) + eps;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) w[j] -= lr * g[j] / denom;
}

// step_size = lr / (1 - b1^step), bc2_sqrt = sqrt(1 - b2^step), as in torch.optim.Adam.
template <typename T>
inline void adam_row(T* w, T* m, T* v, const T* g, int64_t n, T b1, T b2, T step_size,
                     T bc2_sqrt, T eps) {
  const T one_b1 = T(1) - b1, one_b2 = T(1) - b2;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    m[j] = b1 * m[j] + one_b1 * g[j];
    v[j] = b2 * v[j] + one_b2 * g[j] * g[j];
    w[j] -= step_size * (m[j] / (std::sqrt(v[j]) / bc2_sqrt + eps));
  }
}

// Vectorised float32 versions (optimizers_avx2.cpp); call only when have_avx2_fma().
bool have_avx2_fma();
void adagrad_row_avx2(float* w, float* sum, const float* g, int64_t n, float lr, float eps);
void adam_row_avx2(float* w, float* m, float* v, const float* g, int64_t n, float b1, float b2,
                   float step_size, float bc2_sqrt, float eps);

}  // namespace pyscall::cpu
