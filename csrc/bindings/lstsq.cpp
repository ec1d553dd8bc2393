// Bindings for the incremental least-squares solver.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "core/lstsq.hpp"

namespace py = pybind11;

namespace axn::bindings {

void register_lstsq(py::module_& m) {
  using F32 = py::array_t<float, py::array::c_style>;
  py::class_<IncrementalLstsq>(m, "IncrementalLstsq",
                               "Minimum-norm least squares A u = a with rows added in batches (AXN Eq. 4).")
      .def(py::init<int64_t, double>(), py::arg("dim"), py::arg("ridge") = 1e-10)
      .def(
          "add",
          [](IncrementalLstsq& self, const F32& rows, const F32& targets) {
            if (rows.ndim() != 2 || rows.shape(1) != self.dim())
              throw py::value_error("rows must be 2-D (m, " + std::to_string(self.dim()) + ")");
            if (targets.ndim() != 1 || targets.shape(0) != rows.shape(0))
              throw py::value_error("targets must be 1-D with one value per row");
            py::gil_scoped_release release;
            self.add(rows.data(), targets.data(), rows.shape(0));
          },
          py::arg("rows").noconvert(), py::arg("targets").noconvert(), "Append rows (m, dim) float32 and targets (m,).")
      .def(
          "solve",
          [](const IncrementalLstsq& self) {
            F32 u(self.dim());
            float* p = u.mutable_data();
            py::gil_scoped_release release;
            self.solve(p);
            return u;
          },
          "The current minimum-norm least-squares solution u (dim,) float32.")
      .def_property_readonly("n_rows", &IncrementalLstsq::n_rows)
      .def_property_readonly("dim", &IncrementalLstsq::dim)
      .def_property_readonly("over_determined", &IncrementalLstsq::over_determined)
      .def_property_readonly("used_fallback", &IncrementalLstsq::used_fallback);
}

}  // namespace axn::bindings
