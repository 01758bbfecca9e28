// Python bindings of the CUDA arena movement (only compiled when CMake finds nvcc).
#include <pybind11/pybind11.h>

#include "cuda/move_rows.h"

namespace py = pybind11;

void bind_cuda(py::module_& m) {
  m.def("cuda_move_rows", &cuda_move_rows, py::arg("src_buf"), py::arg("dst_buf"), py::arg("elem_size"),
        py::arg("src_len"), py::arg("dst_len"), py::arg("src"), py::arg("dst"), py::arg("copy"), py::arg("total"),
        py::arg("n_moves"), py::arg("stream"),
        "Move n_moves rows (copy then zero-fill up to total) between device buffers of src_len/dst_len "
        "elements; pointers and the stream as integers. Asynchronous on the stream; CUDA errors raise "
        "RuntimeError.");
  m.def("cuda_device_available", &cuda_device_available, "True when the CUDA runtime sees a device.");
}
