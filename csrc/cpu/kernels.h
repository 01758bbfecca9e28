// The four CPU kernels of the ops contract (pyscall/backends/CONTRACT.md, shared with the Triton kernels), for T = float, double,
// and the check of a pooled lookup's bags that pyscall.ops runs on the host for every backend.
#pragma once
#include <cstdint>

#include "table.h"

namespace pyscall::cpu {

enum class PoolMode { kSum = 0, kMean = 1, kMax = 2 };
enum class Optimizer { kSgd = 0, kAdagrad = 1, kRowwiseAdagrad = 2, kAdam = 3 };

// Per-position gradient rows of the backward: position k of ids takes
// scale[k] * grad[src_index[k]] (src_index null -> k, scale null -> 1), keeping only the entries
// j where argmax[src_index[k], j] == k when argmax is given ("max" pooling).
template <typename T>
struct GradSource {
  const T* grad;  // [m, d_max]
  int64_t m;
  const int64_t* src_index;  // [n] or null
  const T* scale;            // [n] or null
  const int64_t* argmax;     // [m, d_max] or null
};

struct OptimizerArgs {
  Optimizer kind;
  double lr, eps, beta1, beta2, weight_decay;
  int64_t step;
};

template <typename T>
void lookup(const Table<T>& t, const int64_t* ids, int64_t n, T* out, int threads);

template <typename T>
void pooled(const Table<T>& t, const int64_t* ids, int64_t n, const int64_t* bag_offsets,
            int64_t bags, PoolMode mode, const T* per_sample_weights, T* out, int64_t* argmax,
            int threads);

// Checks the bags of a pooled lookup over n indices, bag_offsets[0 : count] (starting at 0,
// non-decreasing, at most n; torch ignores indices past the last offset) and returns the last offset.
// Throws std::invalid_argument (ValueError in Python) otherwise.
int64_t bag_end(const int64_t* bag_offsets, int64_t count, int64_t n);

// Writes the whole flat gradient out[0 : t.numel] (zeros outside touched rows).
template <typename T>
void flat_grad(const Table<T>& t, const int64_t* ids, int64_t n, const GradSource<T>& src,
               T* out, int threads);

// state: the per-element buffers of the optimizer (Adagrad: sum; Adam: m, v), same layout as t.w;
// row_state: float32 [rows] (row-wise Adagrad).
template <typename T>
void fused_update(const Table<T>& t, const int64_t* ids, int64_t n, const GradSource<T>& src,
                  T* state0, T* state1, float* row_state, const OptimizerArgs& opt, int threads);

}  // namespace pyscall::cpu
