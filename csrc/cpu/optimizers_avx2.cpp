// AVX2+FMA float32 rows of the optimizers whose loops hold a sqrt: GCC will not vectorise sqrt
// under the default -fmath-errno, and these loops are the compute-bound part of a fused step.
// Same formulas as optimizers.h (FMA rounds once where the scalar code rounds twice).
#include "optimizers.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

namespace pyscall::cpu {

bool have_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

__attribute__((target("avx2,fma"))) void adagrad_row_avx2(float* w, float* sum, const float* g,
                                                         int64_t n, float lr, float eps) {
  const __m256 vlr = _mm256_set1_ps(lr), veps = _mm256_set1_ps(eps);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 gj = _mm256_loadu_ps(g + j);
    const __m256 s = _mm256_fmadd_ps(gj, gj, _mm256_loadu_ps(sum + j));
    _mm256_storeu_ps(sum + j, s);
    const __m256 step = _mm256_div_ps(_mm256_mul_ps(vlr, gj), _mm256_add_ps(_mm256_sqrt_ps(s), veps));
    _mm256_storeu_ps(w + j, _mm256_sub_ps(_mm256_loadu_ps(w + j), step));
  }
  adagrad_row(w + j, sum + j, g + j, n - j, lr, eps);
}

__attribute__((target("avx2,fma"))) void adam_row_avx2(float* w, float* m, float* v,
                                                      const float* g, int64_t n, float b1, float b2,
                                                      float step_size, float bc2_sqrt, float eps) {
  const __m256 vb1 = _mm256_set1_ps(b1), vb2 = _mm256_set1_ps(b2);
  const __m256 va1 = _mm256_set1_ps(1.0f - b1), va2 = _mm256_set1_ps(1.0f - b2);
  const __m256 vss = _mm256_set1_ps(step_size), vbc = _mm256_set1_ps(bc2_sqrt);
  const __m256 veps = _mm256_set1_ps(eps);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 gj = _mm256_loadu_ps(g + j);
    const __m256 mj = _mm256_fmadd_ps(vb1, _mm256_loadu_ps(m + j), _mm256_mul_ps(va1, gj));
    const __m256 vj =
        _mm256_fmadd_ps(vb2, _mm256_loadu_ps(v + j), _mm256_mul_ps(_mm256_mul_ps(va2, gj), gj));
    _mm256_storeu_ps(m + j, mj);
    _mm256_storeu_ps(v + j, vj);
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vj), vbc), veps);
    const __m256 step = _mm256_mul_ps(vss, _mm256_div_ps(mj, denom));
    _mm256_storeu_ps(w + j, _mm256_sub_ps(_mm256_loadu_ps(w + j), step));
  }
  adam_row(w + j, m + j, v + j, g + j, n - j, b1, b2, step_size, bc2_sqrt, eps);
}

}  // namespace pyscall::cpu

#else

namespace pyscall::cpu {
bool have_avx2_fma() { return false; }
void adagrad_row_avx2(float* w, float* sum, const float* g, int64_t n, float lr, float eps) {
  adagrad_row(w, sum, g, n, lr, eps);
}
void adam_row_avx2(float* w, float* m, float* v, const float* g, int64_t n, float b1, float b2,
                   float step_size, float bc2_sqrt, float eps) {
  adam_row(w, m, v, g, n, b1, b2, step_size, bc2_sqrt, eps);
}
}  // namespace pyscall::cpu

#endif
