// Bindings for the sparse SGD kernel: check buffers while holding the GIL,
// release it around the epoch.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "bindings/args.hpp"
#include "core/parallel.hpp"
#include "core/sgd.hpp"

namespace py = pybind11;

namespace axn::bindings {
namespace {

using F32 = py::array_t<float, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

void require(bool cond, const std::string& msg) {
  if (!cond) throw py::value_error(msg);
}

void check_coo(const I64& rows, const I64& cols, const F32& vals) {
  require(rows.ndim() == 1 && cols.ndim() == 1 && vals.ndim() == 1, "rows, cols and vals must be 1-D");
  require(rows.shape(0) == cols.shape(0) && rows.shape(0) == vals.shape(0),
          "rows, cols and vals must have the same length");
}

int threads_arg(const py::object& num_threads) {
  return static_cast<int>(int_arg(num_threads, "num_threads", 0, kMaxThreads, " (0: all cores)"));
}

void check_factor(const F32& X, const char* name, int64_t n) {
  require(X.ndim() == 2, std::string(name) + " must be 2-D");
  require(X.shape(0) == n, std::string(name) + " must have " + std::to_string(n) + " rows");
  require(X.writeable(), std::string(name) + " must be writeable");
}

}  // namespace

void register_sgd(py::module_& m) {
  py::class_<SparseSgd>(m, "SparseSgd",
                        "Lock-free blocked SGD for sparse matrix factorisation (MF_TRNS, AXN Eq. 3); "
                        "bit-reproducible for a given seed and n_blocks, whatever the thread count.")
      .def(py::init([](const I64& rows, const I64& cols, const F32& vals, int64_t n_rows, int64_t n_cols,
                       int64_t n_blocks, const py::object& seed_obj) {
             check_coo(rows, cols, vals);
             const uint64_t seed = uint64_arg(seed_obj, "seed");
             const int64_t* r = rows.data();
             const int64_t* c = cols.data();
             const float* v = vals.data();
             const int64_t nnz = rows.shape(0);
             py::gil_scoped_release release;
             return new SparseSgd(r, c, v, nnz, n_rows, n_cols, n_blocks, seed);
           }),
           py::arg("rows").noconvert(), py::arg("cols").noconvert(), py::arg("vals").noconvert(),
           py::arg("n_rows"), py::arg("n_cols"), py::arg("n_blocks"), py::arg("seed"))
      .def(
          "epoch",
          [](const SparseSgd& self, F32& U, F32& V, float lr, float reg, const py::object& threads_obj,
             int64_t epoch_index) {
            const int num_threads = threads_arg(threads_obj);
            check_factor(U, "U", self.n_rows());
            check_factor(V, "V", self.n_cols());
            require(U.shape(1) == V.shape(1), "U and V must have the same number of columns");
            require(U.data() != V.data(), "U and V must not be the same array");
            float* u = U.mutable_data();
            float* v = V.mutable_data();
            const int64_t d = U.shape(1);
            py::gil_scoped_release release;
            return self.epoch(u, v, d, lr, reg, num_threads, epoch_index);
          },
          py::arg("U").noconvert(), py::arg("V").noconvert(), py::arg("lr"), py::arg("reg"),
          py::arg("num_threads") = 0, py::arg("epoch_index") = 0,
          "One SGD pass over every entry, updating U (n_rows, d) and V (n_cols, d) float32 in place; returns "
          "the RMSE of the residuals met during the pass.")
      .def_property_readonly("nnz", &SparseSgd::nnz)
      .def_property_readonly("n_rows", &SparseSgd::n_rows)
      .def_property_readonly("n_cols", &SparseSgd::n_cols)
      .def_property_readonly("n_blocks", &SparseSgd::n_blocks);

  m.def(
      "sparse_rmse",
      [](const I64& rows, const I64& cols, const F32& vals, const F32& U, const F32& V, const py::object& threads_obj) {
        const int num_threads = threads_arg(threads_obj);
        check_coo(rows, cols, vals);
        require(U.ndim() == 2 && V.ndim() == 2 && U.shape(1) == V.shape(1),
                "U (n_rows, d) and V (n_cols, d) must be 2-D with the same d");
        const int64_t* r = rows.data();
        const int64_t* c = cols.data();
        const float* v = vals.data();
        const int64_t nnz = rows.shape(0);
        const float* u = U.data();
        const float* w = V.data();
        py::gil_scoped_release release;
        return sparse_rmse(r, c, v, nnz, u, U.shape(0), w, V.shape(0), U.shape(1), num_threads);
      },
      py::arg("rows").noconvert(), py::arg("cols").noconvert(), py::arg("vals").noconvert(), py::arg("U").noconvert(),
      py::arg("V").noconvert(), py::arg("num_threads") = 0,
      "RMSE of vals - rowwise(U[rows] . V[cols]) in double precision (fixed summation order).");
}

}  // namespace axn::bindings
