// Python bindings of the arena: metadata class, plans, CPU replay.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <climits>
#include <memory>

#include "arena/arena.h"
#include "arena/huge_pages.h"
#include "arena/layout_lock.h"
#include "arena/plan.h"

namespace py = pybind11;
using pyscall::Arena;
using pyscall::Plan;
using pyscall::Step;

namespace {

// Integer inputs arrive as 1-D C-contiguous int32 or int64 numpy arrays; the
// Python layer converts lists and torch tensors, never floats.
template <typename Out>
std::vector<Out> read_ints(const py::array& a, const char* what) {
  if (a.ndim() != 1)
    throw py::value_error(std::string(what) + " must be 1-D, got " + std::to_string(a.ndim()) +
                          " dimensions");
  if (!(a.flags() & py::array::c_style))
    throw py::type_error(std::string(what) + " must be C-contiguous");
  const size_t n = static_cast<size_t>(a.shape(0));
  std::vector<Out> out(n);
  if (py::isinstance<py::array_t<int64_t>>(a) && a.itemsize() == 8) {
    const auto* p = static_cast<const int64_t*>(a.data());
    for (size_t i = 0; i < n; ++i) {
      // Out of int32 range cannot be a width: keep it invalid for the check.
      if (sizeof(Out) == 4 && (p[i] < INT32_MIN || p[i] > INT32_MAX))
        throw py::value_error(std::string(what) + " value " + std::to_string(p[i]) +
                              " at position " + std::to_string(i) + " is out of range");
      out[i] = static_cast<Out>(p[i]);
    }
  } else if (py::isinstance<py::array_t<int32_t>>(a) && a.itemsize() == 4) {
    const auto* p = static_cast<const int32_t*>(a.data());
    std::copy(p, p + n, out.begin());
  } else {
    throw py::type_error(std::string(what) + " must be int32 or int64, got dtype " +
                         py::str(a.dtype()).cast<std::string>());
  }
  return out;
}

template <typename V>
py::array_t<typename V::value_type> view(const V& v, py::handle owner) {
  using T = typename V::value_type;
  return py::array_t<T>({static_cast<py::ssize_t>(v.size())}, {sizeof(T)}, v.data(), owner);
}

}  // namespace

void bind_arena(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const pyscall::BudgetError& e) {
      py::object cls = py::module_::import("pyscall.errors").attr("BudgetExceededError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const pyscall::MemoryLimitError& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    }
  });

  m.attr("METADATA_BYTES_PER_ROW") = Arena::kMetadataBytesPerRow;  // what the budget counts a row for metadata

  // Subclassed in Python (pyscall.arena.LayoutLock), which adds the key and the context managers.
  py::class_<pyscall::LayoutLock>(m, "LayoutLock", "A table's readers-writer lock (writers preferred).")
      .def(py::init<>())
      .def("acquire_shared", [](pyscall::LayoutLock& l) {
        if (l.try_shared()) return;
        py::gil_scoped_release nogil;  // wait without the GIL: the writer may need it to finish
        l.wait_shared();
      })
      .def("release_shared", &pyscall::LayoutLock::release)
      .def("acquire_exclusive", [](pyscall::LayoutLock& l) {
        if (l.try_exclusive()) return;
        py::gil_scoped_release nogil;
        l.wait_exclusive();
      })
      .def("release_exclusive", &pyscall::LayoutLock::release);

  py::class_<Step>(m, "Step", "Row moves: copy `copy` elements src -> dst, zero dst[copy:total].")
      .def_property_readonly("src", [](py::object s) { return view(s.cast<Step&>().src, s); })
      .def_property_readonly("dst", [](py::object s) { return view(s.cast<Step&>().dst, s); })
      .def_property_readonly("copy", [](py::object s) { return view(s.cast<Step&>().copy, s); })
      .def_property_readonly("total", [](py::object s) { return view(s.cast<Step&>().total, s); })
      .def_readonly("ordered", &Step::ordered)
      .def("__len__", &Step::size);

  // The arena recycles a plan's arrays once nothing holds it: every Step and
  // step array keeps its Plan alive, so a view never outlives its storage.
  py::class_<Plan, std::shared_ptr<Plan>>(m, "Plan", "Layout plan: how the buffers follow (replay, capacities, "
                                                     "per-row state) and the row moves (steps).")
      .def_readonly("capacity_before", &Plan::capacity_before)
      .def_readonly("capacity_after", &Plan::capacity_after)
      .def_readonly("used_after", &Plan::used_after)
      .def_readonly("rows_before", &Plan::rows_before)
      .def_readonly("rows_after", &Plan::rows_after)
      .def_property_readonly("reset_rows", [](py::object p) { return view(p.cast<Plan&>().reset_rows, p); })
      .def_property_readonly("replay", [](const Plan& p) {
        static const char* names[] = {"in_place", "grow", "trim", "fresh"};
        return std::string(names[static_cast<int>(p.replay)]);
      })
      .def_readonly("staged", &Plan::staged)
      .def_property_readonly("steps", [](py::object self) {
        py::list out;
        for (Step& s : self.cast<Plan&>().steps)
          out.append(py::cast(&s, py::return_value_policy::reference_internal, self));
        return out;
      });

  py::class_<Arena>(m, "Arena", "Ragged-arena metadata (offsets, widths, free extents, budget).")
      .def(py::init<int64_t, int64_t, int64_t, int64_t>(), py::arg("d_max"),
           py::arg("bytes_per_element"), py::arg("bytes_per_row"), py::arg("budget_bytes"))
      .def("append", [](Arena& a, const py::array& w) {
        // The rows' metadata alone must fit before their widths are copied: a billion widths under
        // a small budget are refused here, not after gigabytes of copies.
        if (w.ndim() == 1) a.check_append(static_cast<int64_t>(w.shape(0)), 0);
        return a.append(read_ints<int32_t>(w, "widths"));
      })
      .def("append_uniform", [](Arena& a, int64_t count, int64_t width) {
        // A table built without widths: no widths array at all, and the budget checked before any.
        if (count < 0) throw py::value_error("count must be >= 0, got " + std::to_string(count));
        if (width < 0 || width > a.d_max())
          throw py::value_error("width " + std::to_string(width) + " is outside [0, d_max=" +
                                std::to_string(a.d_max()) + "]");
        const __int128 elements = static_cast<__int128>(count) * width;  // saturated: an absurd count stays absurd
        a.check_append(count, static_cast<int64_t>(std::min<__int128>(elements, INT64_MAX / 4)));
        return a.append(std::vector<int32_t>(static_cast<size_t>(count), static_cast<int32_t>(width)));
      }, py::arg("count"), py::arg("width"))
      .def("check_append", &Arena::check_append, py::arg("rows"), py::arg("elements"), py::arg("op") = "append",
           "raises BudgetExceededError (or MemoryError) unless that many more rows and elements fit")
      .def("set_memory_limit", &Arena::set_memory_limit, py::arg("bytes"),
           "bytes no operation may need (< 0: none), checked like the budget; raises MemoryError")
      .def("resize", [](Arena& a, const py::array& ids, const py::array& w) {
        return a.resize(read_ints<int64_t>(ids, "ids"), read_ints<int32_t>(w, "widths"));
      })
      .def("set_widths", [](Arena& a, const py::array& w) {
        return a.set_widths(read_ints<int32_t>(w, "widths"));
      })
      .def("release", [](Arena& a, const py::array& ids) {
        return a.release(read_ints<int64_t>(ids, "ids"));
      })
      .def("compact", &Arena::compact)
      .def("stage", &Arena::stage, "after a layout operation whose plan needs buffers allocated: the metadata "
           "stays as it was until commit() (plan.staged tells)")
      .def("undo", &Arena::undo, "reverts the last layout operation's metadata (its plan not replayed)")
      .def("commit", &Arena::commit, "makes a staged operation's metadata current; forgets what undo() would need")
      .def("set_relayout_allocates", &Arena::set_relayout_allocates, py::arg("allocates"))
      .def("set_budget", &Arena::set_budget, py::arg("budget_bytes"))
      .def("validate", &Arena::validate)
      .def("stats", [](const Arena& a) {
        const pyscall::ArenaStats s = a.stats();
        py::dict d;
        d["budget_bytes"] = s.budget_bytes;
        d["capacity_bytes"] = s.capacity_bytes;
        d["used_bytes"] = s.used_bytes;
        d["free_bytes"] = s.free_bytes;
        d["largest_free_bytes"] = s.largest_free_bytes;
        d["fragmentation"] = s.fragmentation;
        d["num_rows"] = s.num_rows;
        d["total_width"] = s.total_width;
        d["bytes_per_element"] = s.bytes_per_element;
        d["bytes_per_row"] = s.bytes_per_row;
        d["metadata_bytes"] = s.metadata_bytes;
        d["free_extents"] = s.free_extents;
        d["scratch_bytes"] = s.scratch_bytes;
        d["row_metadata_bytes"] = s.row_metadata_bytes;
        return d;
      })
      .def_property_readonly("offsets", [](py::object self) {
        return view(self.cast<Arena&>().offsets(), self);
      }, "int64 view, valid until the next layout operation")
      .def_property_readonly("widths", [](py::object self) {
        return view(self.cast<Arena&>().widths(), self);
      }, "int32 view, valid until the next layout operation")
      .def_property_readonly("uniform_width", &Arena::uniform_width,
                             "W > 0 while every row has width W at offset id * W, else 0")
      .def_property_readonly("num_rows", &Arena::num_rows)
      .def_property_readonly("d_max", &Arena::d_max)
      .def_property_readonly("capacity", &Arena::capacity)
      .def_property_readonly("used", &Arena::used, "total width (elements)")
      .def_property_readonly("max_free_extents", &Arena::max_free_extents)
      // The layout as plain values, and an arena rebuilt from them: how RaggedArena pickles (and so
      // copy.deepcopy keeps) its exact layout, so that tensors laid out by it stay valid.
      .def("layout_state", [](const Arena& a) {
        const pyscall::ArenaStats s = a.stats();
        return py::make_tuple(a.d_max(), s.bytes_per_element, s.bytes_per_row, s.budget_bytes,
                              py::array_t<int64_t>(a.offsets().size(), a.offsets().data()),
                              py::array_t<int32_t>(a.widths().size(), a.widths().data()), a.capacity());
      })
      .def_static("with_layout", [](int64_t d_max, int64_t bytes_per_element, int64_t bytes_per_row,
                                    int64_t budget_bytes, const py::array& offsets, const py::array& widths,
                                    int64_t capacity) {
        return Arena::with_layout(d_max, bytes_per_element, bytes_per_row, budget_bytes,
                                  read_ints<int64_t>(offsets, "offsets"), read_ints<int32_t>(widths, "widths"),
                                  capacity);
      });

  m.def(
      "apply_plan_cpu",
      [](const Plan& plan, const std::vector<std::tuple<uint64_t, int64_t, int64_t>>& bufs,
         int num_threads) {
        std::vector<pyscall::Buffer> buffers;
        for (auto [ptr, es, numel] : bufs)
          buffers.push_back({reinterpret_cast<char*>(ptr), es, numel});
        py::gil_scoped_release unlocked;
        pyscall::apply_plan_cpu(plan, buffers, num_threads);
      },
      py::arg("plan"), py::arg("buffers"), py::arg("num_threads"),
      "Replay `plan` in place on (data_ptr, elem_size, numel) CPU buffers.");
  m.def(
      "apply_relayout_cpu",
      [](const Plan& plan, const std::vector<std::tuple<uint64_t, int64_t, int64_t>>& from,
         const std::vector<std::tuple<uint64_t, int64_t, int64_t>>& to, int num_threads) {
        auto convert = [](const std::vector<std::tuple<uint64_t, int64_t, int64_t>>& bufs) {
          std::vector<pyscall::Buffer> out;
          for (auto [ptr, es, numel] : bufs) out.push_back({reinterpret_cast<char*>(ptr), es, numel});
          return out;
        };
        auto f = convert(from), t = convert(to);
        py::gil_scoped_release unlocked;
        pyscall::apply_relayout_cpu(plan, f, t, num_threads);
      },
      py::arg("plan"), py::arg("from_buffers"), py::arg("to_buffers"), py::arg("num_threads"),
      "Replay a one-ordered-step plan out of place: read from_buffers, write to_buffers.");
  m.def("advise_huge_pages", &pyscall::advise_huge_pages, py::arg("addr"), py::arg("bytes"),
        "Ask for transparent huge pages over a fresh CPU buffer (Linux; before its first write).");
}
