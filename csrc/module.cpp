// pyscall._C: one extension, one bind function per part of the C++ core.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_arena(py::module_& m);        // csrc/arena/bind_arena.cpp
void bind_cpu_kernels(py::module_& m);  // csrc/cpu/bind_cpu.cpp
#ifdef PYSCALL_WITH_CUDA
void bind_cuda(py::module_& m);         // csrc/cuda/bind_cuda.cpp
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyscall C++ core: ragged arena and CPU kernels";
  bind_arena(m);
  bind_cpu_kernels(m);
#ifdef PYSCALL_WITH_CUDA
  bind_cuda(m);
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
