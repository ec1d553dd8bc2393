// Bindings for the top-k kernels: check buffers and allocate results while
// holding the GIL, release it around the scan.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <new>
#include <string>
#include <vector>

#include "bindings/args.hpp"
#include "core/dot.hpp"
#include "core/parallel.hpp"
#include "core/topk.hpp"

namespace py = pybind11;

namespace axn::bindings {
namespace {

using F32 = py::array_t<float, py::array::c_style>;
using U16 = py::array_t<uint16_t, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

void require(bool cond, const std::string& msg) {
  if (!cond) throw py::value_error(msg);
}

ExcludeLists exclude_view(const I64& ids, const I64& offsets) {
  require(ids.ndim() == 1 && offsets.ndim() == 1, "exclude ids and offsets must be 1-D");
  ExcludeLists ex;
  if (offsets.shape(0) == 0) return ex;
  ex.ids = ids.data();
  ex.offsets = offsets.data();
  ex.n_lists = offsets.shape(0) - 1;
  require(offsets.data()[ex.n_lists] <= ids.shape(0), "exclude offsets point past the ids");
  return ex;
}

// k beyond the number of items only adds padding: allowed up to this many, so
// that a typo like k=10**9 on a small index is an error, not a huge allocation.
constexpr int64_t kMaxPaddedK = 1 << 20;

int64_t k_arg(const py::object& k, int64_t n_items) {
  return int_arg(k, "k", 0, std::max(n_items, kMaxPaddedK),
                 " (max(n_items, " + std::to_string(kMaxPaddedK) + "); k beyond n_items=" + std::to_string(n_items) +
                     " only adds -inf/-1 padding)");
}

int threads_arg(const py::object& num_threads) {
  return static_cast<int>(int_arg(num_threads, "num_threads", 0, kMaxThreads, " (0: all cores)"));
}

// Checks U against V, allocates (scores, ids) and runs kernel(k, scores, ids) without the GIL.
template <class Kernel>
py::tuple run_topk(const F32& V, const F32& U, const py::object& k_obj, Kernel kernel) {
  require(V.ndim() == 2, "V must be 2-D (n_items, dim)");
  require(U.ndim() == 2 && U.shape(1) == V.shape(1), "U must be 2-D (n_queries, dim) with V's dim");
  const int64_t k = k_arg(k_obj, V.shape(0));
  F32 scores({U.shape(0), k});
  I64 ids({U.shape(0), k});
  float* s = scores.mutable_data();
  int64_t* i = ids.mutable_data();
  bool out_of_memory = false;
  {
    py::gil_scoped_release release;
    try {
      kernel(k, s, i);
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    }
  }
  if (out_of_memory) {
    const std::string msg = "out of memory during the top-k scan (n_items=" + std::to_string(V.shape(0)) +
                            ", n_queries=" + std::to_string(U.shape(0)) + ", k=" + std::to_string(k) +
                            "): search fewer queries at once or use fewer threads";
    PyErr_SetString(PyExc_MemoryError, msg.c_str());
    throw py::error_already_set();
  }
  return py::make_tuple(scores, ids);
}

py::tuple topk_f32(const F32& V, const F32& U, const py::object& k_obj, const I64& ex_ids, const I64& ex_offsets,
                   const py::object& threads_obj, double max_row_norm) {
  const ExcludeLists ex = exclude_view(ex_ids, ex_offsets);
  const int num_threads = threads_arg(threads_obj);
  return run_topk(V, U, k_obj, [&](int64_t k, float* s, int64_t* i) {
    topk_ip_f32(V.data(), V.shape(0), V.shape(1), U.data(), U.shape(0), k, ex, num_threads, s, i, max_row_norm);
  });
}

py::tuple topk_f16(const U16& V16, const F32& V32, double max_row_norm, const F32& U, const py::object& k_obj,
                   const I64& ex_ids, const I64& ex_offsets, const py::object& threads_obj) {
  require(V16.ndim() == 2 && V32.ndim() == 2 && V16.shape(0) == V32.shape(0) && V16.shape(1) == V32.shape(1),
          "V16 and V32 must be 2-D arrays of the same shape");
  const ExcludeLists ex = exclude_view(ex_ids, ex_offsets);
  const int num_threads = threads_arg(threads_obj);
  return run_topk(V32, U, k_obj, [&](int64_t k, float* s, int64_t* i) {
    topk_ip_f16(V16.data(), V32.data(), max_row_norm, V32.shape(0), V32.shape(1), U.data(), U.shape(0), k, ex,
                num_threads, s, i);
  });
}

F32 dot_rows(const F32& V, const F32& U) {
  require(V.ndim() == 2 && U.ndim() == 2 && U.shape(1) == V.shape(1), "V (n, d) and U (nq, d) expected");
  F32 out({V.shape(0), U.shape(0)});
  float* o = out.mutable_data();
  py::gil_scoped_release release;
  dot_rows_f32(V.data(), V.shape(0), V.shape(1), U.data(), U.shape(0), o);
  return out;
}

F32 gemm_rows(const F32& V, const F32& U) {
  require(V.ndim() == 2 && U.ndim() == 2 && U.shape(1) == V.shape(1), "V (n, d) and U (nq, d) expected");
  const int64_t d = V.shape(1), nq = U.shape(0);
  std::vector<float> Up(d * packed_width(nq));
  pack_queries(U.data(), nq, d, Up.data());
  F32 out({V.shape(0), nq});
  float* o = out.mutable_data();
  py::gil_scoped_release release;
  gemm_rows_f32(V.data(), V.shape(0), d, U.data(), Up.data(), nq, o);
  return out;
}

}  // namespace

void register_topk(py::module_& m) {
  m.def("topk_ip", &topk_f32, py::arg("V").noconvert(), py::arg("U").noconvert(), py::arg("k"),
        py::arg("exclude_ids").noconvert(), py::arg("exclude_offsets").noconvert(), py::arg("num_threads") = 0,
        py::arg("max_row_norm") = -1.0,
        "Exact top-k by inner product. V (n, d) float32, U (nq, d) float32; exclusions in CSR form "
        "(offsets empty: none; one list: all queries; else one per query). Returns (scores (nq, k) float32, "
        "ids (nq, k) int64), best first (ties: smaller id), padded with -inf / -1. Scores that overflow "
        "float32 rank by one rule in every path: +inf first, -inf after every finite score, NaN (inf - inf) "
        "last; none is dropped. k: 0 to max(n_items, 2**20); num_threads: 0 (all cores) to 1024. "
        "max_row_norm (max row 2-norm of V, or -1) enables the tiled batch kernel.");
  m.def("topk_ip_f16", &topk_f16, py::arg("V16").noconvert(), py::arg("V32").noconvert(), py::arg("max_row_norm"),
        py::arg("U").noconvert(), py::arg("k"), py::arg("exclude_ids").noconvert(),
        py::arg("exclude_offsets").noconvert(), py::arg("num_threads") = 0,
        "topk_ip over a float16 copy V16 (as uint16) of V32 (V32 rounded to float16, no overflow), re-scoring in "
        "float32: the same result as topk_ip on V32, non-finite scores included.");
  m.def("dot_rows", &dot_rows, py::arg("V").noconvert(), py::arg("U").noconvert(),
        "V @ U.T computed with the kernels' accumulation order: (n, nq) float32.");
  m.def("gemm_rows", &gemm_rows, py::arg("V").noconvert(), py::arg("U").noconvert(),
        "V @ U.T with the tiled batch kernel (another summation order): (n, nq) float32.");
  m.def("gemm_order_error_bound", &gemm_order_error_bound, py::arg("u_norm"), py::arg("max_row_norm"), py::arg("d"),
        "Bound on |gemm_rows - dot_rows| for one query.");
  m.def("fp16_score_error_bound",
        [](const F32& u, double max_row_norm) { return fp16_score_error_bound(u.data(), u.size(), max_row_norm); },
        py::arg("u").noconvert(), py::arg("max_row_norm"),
        "Upper bound on |fp16-row score - fp32-row score| for query u and rows of norm <= max_row_norm.");
  m.def("simd_available", &simd_available, "True when the AVX2/FMA/F16C kernels are in use.");
  m.attr("MAX_THREADS") = kMaxThreads;
  m.attr("MAX_PADDED_K") = kMaxPaddedK;
}

}  // namespace axn::bindings
