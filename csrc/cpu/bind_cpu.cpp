// pyscall._C.cpu: the CPU kernels. Tensors arrive as raw addresses (t.data_ptr()) already checked
// for dtype, device, contiguity and shape by pyscall/backends/cpu.py; the GIL is released while
// the kernels run.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels.h"

namespace py = pybind11;
using namespace pyscall::cpu;

namespace {

enum DtypeCode { kFloat32 = 0, kFloat64 = 1 };

template <typename P>
P* ptr(uintptr_t a) {
  return reinterpret_cast<P*>(a);
}

// Calls f(T{}) with T the C++ type of the dtype code.
template <typename F>
void dispatch(int dtype, F&& f) {
  switch (dtype) {
    case kFloat32: f(float{}); break;
    case kFloat64: f(double{}); break;
    default: throw std::invalid_argument("dtype code must be 0 (float32) or 1 (float64)");
  }
}

template <typename T>
Table<T> table(uintptr_t weight, int64_t numel, uintptr_t offsets, uintptr_t widths, int64_t rows,
               int64_t d_max, int64_t uniform) {
  // The layout itself is the caller's promise (RaggedArena.uniform_width); what keeps every access
  // inside the buffer is checked here.
  if (uniform < 0 || uniform > d_max || (uniform > 0 && rows > numel / uniform))
    throw std::invalid_argument("uniform_width must lie in [0, d_max] with num_rows * uniform_width <= "
                                "the buffer's length, got " + std::to_string(uniform));
  return {ptr<T>(weight), numel, ptr<const int64_t>(offsets), ptr<const int32_t>(widths), rows,
          d_max, uniform};
}

template <typename T>
GradSource<T> source(uintptr_t grad, int64_t m, uintptr_t src_index, uintptr_t scale,
                     uintptr_t argmax) {
  return {ptr<const T>(grad), m, ptr<const int64_t>(src_index), ptr<const T>(scale),
          ptr<const int64_t>(argmax)};
}

}  // namespace

void bind_cpu_kernels(py::module_& parent) {
  py::module_ m = parent.def_submodule("cpu", "CPU kernels of the ragged-table ops (raw pointers)");

  m.def(
      "lookup",
      [](int dtype, uintptr_t weight, int64_t numel, uintptr_t offsets, uintptr_t widths,
         int64_t rows, int64_t d_max, int64_t uniform_width, uintptr_t ids, int64_t n, uintptr_t out,
         int threads) {
        py::gil_scoped_release nogil;
        dispatch(dtype, [&](auto t) {
          using T = decltype(t);
          lookup(table<T>(weight, numel, offsets, widths, rows, d_max, uniform_width),
                 ptr<const int64_t>(ids), n, ptr<T>(out), threads);
        });
      },
      py::arg("dtype"), py::arg("weight"), py::arg("numel"), py::arg("offsets"), py::arg("widths"),
      py::arg("rows"), py::arg("d_max"), py::arg("uniform_width"), py::arg("ids"), py::arg("n"),
      py::arg("out"), py::arg("threads"));

  m.def(
      "pooled",
      [](int dtype, uintptr_t weight, int64_t numel, uintptr_t offsets, uintptr_t widths,
         int64_t rows, int64_t d_max, int64_t uniform_width, uintptr_t ids, int64_t n,
         uintptr_t bag_offsets, int64_t bags, int mode, uintptr_t per_sample_weights, uintptr_t out,
         uintptr_t argmax, int threads) {
        if (mode < 0 || mode > 2) throw std::invalid_argument("mode code must be 0, 1 or 2");
        py::gil_scoped_release nogil;
        dispatch(dtype, [&](auto t) {
          using T = decltype(t);
          pooled(table<T>(weight, numel, offsets, widths, rows, d_max, uniform_width),
                 ptr<const int64_t>(ids), n, ptr<const int64_t>(bag_offsets), bags,
                 static_cast<PoolMode>(mode), ptr<const T>(per_sample_weights), ptr<T>(out),
                 ptr<int64_t>(argmax), threads);
        });
      },
      py::arg("dtype"), py::arg("weight"), py::arg("numel"), py::arg("offsets"), py::arg("widths"),
      py::arg("rows"), py::arg("d_max"), py::arg("uniform_width"), py::arg("ids"), py::arg("n"),
      py::arg("bag_offsets"), py::arg("bags"), py::arg("mode"), py::arg("per_sample_weights"),
      py::arg("out"), py::arg("argmax"), py::arg("threads"));

  // A fused optimizer's float64 [5] hyper-parameters and its int64 step count, advanced by one: one call
  // instead of three torch ops on the scalars at every step.
  m.def(
      "advance_step",
      [](uintptr_t hparams, uintptr_t step) {
        const double* h = ptr<const double>(hparams);
        int64_t* count = ptr<int64_t>(step);
        *count += 1;
        return py::make_tuple(h[0], h[1], h[2], h[3], h[4], *count);
      },
      py::arg("hparams"), py::arg("step"));

  m.def(
      "bag_end",
      [](uintptr_t bag_offsets, int64_t count, int64_t n) {
        return bag_end(ptr<const int64_t>(bag_offsets), count, n);
      },
      py::arg("bag_offsets"), py::arg("count"), py::arg("n"));

  m.def(
      "flat_grad",
      [](int dtype, uintptr_t grad_src, int64_t m_rows, uintptr_t ids, int64_t n,
         uintptr_t src_index, uintptr_t scale, uintptr_t argmax, uintptr_t offsets,
         uintptr_t widths, int64_t rows, int64_t d_max, int64_t uniform_width, uintptr_t out,
         int64_t capacity, int threads) {
        py::gil_scoped_release nogil;
        dispatch(dtype, [&](auto t) {
          using T = decltype(t);
          flat_grad(table<T>(out, capacity, offsets, widths, rows, d_max, uniform_width),
                    ptr<const int64_t>(ids), n, source<T>(grad_src, m_rows, src_index, scale, argmax),
                    ptr<T>(out), threads);
        });
      },
      py::arg("dtype"), py::arg("grad_src"), py::arg("m"), py::arg("ids"), py::arg("n"),
      py::arg("src_index"), py::arg("scale"), py::arg("argmax"), py::arg("offsets"),
      py::arg("widths"), py::arg("rows"), py::arg("d_max"), py::arg("uniform_width"), py::arg("out"),
      py::arg("capacity"), py::arg("threads"));

  m.def(
      "fused_update",
      [](int dtype, uintptr_t grad_src, int64_t m_rows, uintptr_t ids, int64_t n,
         uintptr_t src_index, uintptr_t scale, uintptr_t argmax, uintptr_t offsets,
         uintptr_t widths, int64_t rows, int64_t d_max, int64_t uniform_width, uintptr_t weight,
         int64_t numel, uintptr_t state0, uintptr_t state1, uintptr_t row_state, int optimizer,
         double lr, double eps, double beta1, double beta2, double weight_decay, int64_t step,
         int threads) {
        if (optimizer < 0 || optimizer > 3)
          throw std::invalid_argument("optimizer code must be 0..3");
        const OptimizerArgs opt{static_cast<Optimizer>(optimizer), lr, eps, beta1, beta2,
                                weight_decay, step};
        py::gil_scoped_release nogil;
        dispatch(dtype, [&](auto t) {
          using T = decltype(t);
          fused_update(table<T>(weight, numel, offsets, widths, rows, d_max, uniform_width),
                       ptr<const int64_t>(ids), n,
                       source<T>(grad_src, m_rows, src_index, scale, argmax), ptr<T>(state0),
                       ptr<T>(state1), ptr<float>(row_state), opt, threads);
        });
      },
      py::arg("dtype"), py::arg("grad_src"), py::arg("m"), py::arg("ids"), py::arg("n"),
      py::arg("src_index"), py::arg("scale"), py::arg("argmax"), py::arg("offsets"),
      py::arg("widths"), py::arg("rows"), py::arg("d_max"), py::arg("uniform_width"),
      py::arg("weight"), py::arg("numel"), py::arg("state0"), py::arg("state1"), py::arg("row_state"),
      py::arg("optimizer"), py::arg("lr"), py::arg("eps"), py::arg("beta1"), py::arg("beta2"),
      py::arg("weight_decay"), py::arg("step"), py::arg("threads"));
}
