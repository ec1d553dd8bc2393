#pragma once
// Sparse matrix factorisation by SGD (MF_TRNS, Eq. 3 of the AXN paper):
//   min over U, V of  sum_{(q,i) observed} (G_qi - U_q . V_i)^2 + reg (|U_q|^2 + |V_i|^2)
// with one regularised SGD step per observed entry:
//   e = G_qi - U_q . V_i;  U_q += lr (e V_i - reg U_q);  V_i += lr (e U_q - reg V_i)
// (both updates use the values from before the step).
//
// Parallel without locks, as LIBMF / DSGD do: rows and columns are randomly
// assigned to B row blocks and B column blocks, so G is cut into B x B blocks.
// An epoch is B "strata"; stratum s holds the B blocks (r, (r + s) mod B),
// which share no row and no column, so threads update them at the same time
// without touching the same embedding. Blocks are processed whole by one
// thread, entries inside a block in a fixed shuffled order. The result
// therefore depends only on the data, the seed and B, never on the number of
// threads or on scheduling: runs are bit-reproducible on a given CPU.
#include <cstdint>
#include <vector>

namespace axn {

class SparseSgd {
 public:
  // rows[e], cols[e], vals[e] for e < nnz: the observed entries of an
  // n_rows x n_cols matrix (each id in range, each value finite).
  // n_blocks: B above (>= 1); seed: the assignment of rows/columns to blocks,
  // the order inside blocks and the per-epoch order of strata.
  SparseSgd(const int64_t* rows, const int64_t* cols, const float* vals, int64_t nnz, int64_t n_rows,
            int64_t n_cols, int64_t n_blocks, uint64_t seed);

  // One pass over every entry. U: n_rows x d, V: n_cols x d (row-major
  // float32, updated in place). epoch_index picks the strata order. Returns the
  // RMSE of the residuals e seen during the pass (before each step).
  double epoch(float* U, float* V, int64_t d, float lr, float reg, int num_threads, int64_t epoch_index) const;

  int64_t nnz() const { return nnz_; }
  int64_t n_rows() const { return n_rows_; }
  int64_t n_cols() const { return n_cols_; }
  int64_t n_blocks() const { return B_; }

 private:
  struct Entry {
    int32_t row;
    int32_t col;
    float val;
  };
  int64_t nnz_, n_rows_, n_cols_, B_;
  uint64_t seed_;
  std::vector<Entry> entries_;        // grouped by block (row block major), shuffled inside
  std::vector<int64_t> block_start_;  // B * B + 1 offsets into entries_
};

// RMSE of G - U V^T over the given entries (no update), in double precision,
// summed in a fixed order whatever the thread count.
double sparse_rmse(const int64_t* rows, const int64_t* cols, const float* vals, int64_t nnz, const float* U,
                   int64_t n_rows, const float* V, int64_t n_cols, int64_t d, int num_threads);

}  // namespace axn
