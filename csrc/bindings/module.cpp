// The _core extension module: one registration function per kernel family,
// each defined in its own binding file next to this one.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace axn::bindings {
void register_topk(py::module_& m);
void register_lstsq(py::module_& m);
void register_sgd(py::module_& m);
}  // namespace axn::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "axn_fast C++ core: top-k inner-product search, incremental least squares, sparse SGD";
#ifdef AXN_FAST_VERSION
  m.attr("__version__") = AXN_FAST_VERSION;
#endif
  axn::bindings::register_topk(m);
  axn::bindings::register_lstsq(m);
  axn::bindings::register_sgd(m);
}
