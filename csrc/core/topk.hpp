#pragma once
// Exact top-k by inner product over an item matrix, with per-query exclusions.
#include <cstdint>

namespace axn {

// Excluded item ids in CSR form: query q excludes ids[offsets[q] .. offsets[q+1]).
// n_lists == 0: nothing excluded; n_lists == 1: the one list applies to every
// query; otherwise n_lists must equal the number of queries. Ids may repeat and
// need not be sorted; each must lie in [0, n_items).
struct ExcludeLists {
  const int64_t* ids = nullptr;
  const int64_t* offsets = nullptr;
  int64_t n_lists = 0;
};

// For each of the nq queries U[q, :], the k items with the largest <V[i, :], U[q, :]>
// that are not excluded, best first (ties: smaller id first), written to
// scores[q * k ..] / ids[q * k ..]; padded with -inf / -1 when fewer remain.
// Scores that are not finite (huge inputs overflow float32; inf - inf gives
// NaN) follow one rule in every path: +inf ranks before every finite score,
// -inf after them, NaN after everything (ties by id, as above), and the
// reported score is the value itself (NaN as the quiet NaN 0x7fc00000). No
// item is ever dropped for its score, and single, batched, float16 and
// portable scans agree bit for bit.
// V: n x d row-major float32. num_threads: 0 (all hardware threads) to
// kMaxThreads (parallel.hpp), else std::invalid_argument.
// With several queries and max_row_norm = max_i ||V[i]||_2 known (>= 0), the
// scan uses the tiled kernel and re-scores the items its rounding could
// misorder, so the result equals the single-query one; pass -1 if unknown.
void topk_ip_f32(const float* V, int64_t n, int64_t d, const float* U, int64_t nq, int64_t k,
                 const ExcludeLists& exclude, int num_threads, float* scores, int64_t* ids,
                 double max_row_norm = -1);

// The same result as topk_ip_f32 on V32, scanning the float16 copy V16 (half
// the memory traffic) and re-scoring in float32 every item that the scan
// cannot rule out: with E an upper bound on |fp16 score - fp32 score| (from
// max_row_norm = max_i ||V32[i]||_2, the query's norms and d), every item whose
// fp16 score is within 2E of the k-th best fp16 score is re-scored, which
// provably contains the exact float32 top-k. V16 must be V32 rounded to
// float16 (so |V32| <= 65504 wherever V16 is finite); when a query's scores
// could overflow float32 the bound means nothing and V32 is scanned instead.
void topk_ip_f16(const uint16_t* V16, const float* V32, double max_row_norm, int64_t n, int64_t d,
                 const float* U, int64_t nq, int64_t k, const ExcludeLists& exclude,
                 int num_threads, float* scores, int64_t* ids);

// The bound E used above, for one query u (exposed for tests).
double fp16_score_error_bound(const float* u, int64_t d, double max_row_norm);

}  // namespace axn
