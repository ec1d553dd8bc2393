#pragma once
// Inner products of item rows with query vectors, float32 or float16 rows.
//
// Every (row, query) pair is accumulated in one fixed order (8 lanes over the
// first d - d % 8 coordinates, a fixed horizontal sum, then the tail), whatever
// the number of rows or queries in the call. So a score is bitwise the same in
// a single-query scan, a batched scan and a one-row re-score, which lets the
// float16 path reproduce the float32 path's results exactly.
//
// AVX2+FMA+F16C kernels are compiled with per-function target attributes and
// chosen at run time; other CPUs get a portable scalar version of the same
// algorithm (self-consistent, though not bitwise equal to the AVX2 one).
#include <cstdint>

namespace axn {

// True when the AVX2/FMA/F16C kernels are in use on this CPU.
bool simd_available();

// out[r * nq + q] = <V[r, :], U[q, :]> for r < rows, q < nq.
// V: rows x d row-major (float32 or IEEE half stored as uint16), U: nq x d.
void dot_rows_f32(const float* V, int64_t rows, int64_t d, const float* U, int64_t nq, float* out);
void dot_rows_f16(const uint16_t* V, int64_t rows, int64_t d, const float* U, int64_t nq, float* out);

// Batched scores with GEMM-style register tiling (6 rows x 16 queries): much
// faster than dot_rows_* for several queries, but summed in another order, so
// each value may differ from the dot_rows_* one by up to
// gemm_order_error_bound(). Up is U packed by pack_queries(); out as above.
// The float16 version converts rows into `scratch` (rows * d floats) first.
// Without AVX2 these fall back to dot_rows_* (difference 0).
int64_t pack_queries(const float* U, int64_t nq, int64_t d, float* Up);  // Up: d * packed_width(nq)
int64_t packed_width(int64_t nq);
void gemm_rows_f32(const float* V, int64_t rows, int64_t d, const float* U, const float* Up, int64_t nq,
                   float* out);
void gemm_rows_f16(const uint16_t* V, int64_t rows, int64_t d, const float* U, const float* Up, int64_t nq,
                   float* out, float* scratch);
// Bound on |gemm score - dot_rows score| for a query of 2-norm u_norm and rows
// of 2-norm <= max_row_norm (both sums are float32 sums of d products).
double gemm_order_error_bound(double u_norm, double max_row_norm, int64_t d);

// The same value that dot_rows_f32 gives for one row and one query.
float dot_f32(const float* v, const float* u, int64_t d);

// IEEE half -> float (exact).
float half_to_float(uint16_t h);

}  // namespace axn
