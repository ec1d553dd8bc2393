// Bindings for the sparse SGD kernel: owned by the offline-indexing issue (#4).
#include <pybind11/pybind11.h>
namespace py = pybind11;
namespace axn::bindings {
void register_sgd(py::module_& /*m*/) {}
}  // namespace axn::bindings
