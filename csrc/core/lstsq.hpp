#pragma once
// The per-round least-squares fit of AXN (Eq. 4 of the AXN paper):
//   u = pinv(A^T A) A^T a, the minimum-norm least-squares solution of A u = a,
// where the rows of A (item embeddings) and the targets a (CE scores) arrive in
// batches, one batch per search round.
#include <Eigen/Dense>
#include <cstdint>
#include <mutex>
#include <vector>

namespace axn {

// Keeps a Cholesky factor of the smaller Gram matrix and extends it as rows
// arrive, in double precision:
//  - while m <= d (under-determined): L L^T = A A^T + delta I (m x m), grown by
//    blocks; u = A^T (A A^T + delta I)^{-1} a;
//  - once m > d (over-determined): L L^T = A^T A + delta I (d x d), updated by
//    rank-one updates (or refactored for big batches); u = (A^T A + delta I)^{-1} A^T a.
// Both are the ridge solution (A^T A + delta I)^{-1} A^T a, which tends to the
// minimum-norm solution as delta -> 0; delta = ridge * (mean squared row norm)
// is a numerical guard only (default ridge 1e-10). When the rows are
// numerically linearly dependent (a Cholesky pivot at the ridge's level), the
// solver falls back to a complete orthogonal decomposition of A that treats
// directions below 1e-5 of the largest as null (float32 inputs resolve no more).
// One object serves one search; calls on it are serialised by a mutex.
class IncrementalLstsq {
 public:
  explicit IncrementalLstsq(int64_t dim, double ridge = 1e-10);

  // Appends m rows (m x dim, row-major) and their m targets.
  void add(const float* rows, const float* targets, int64_t m);
  // Writes the current solution (dim values); zeros before any row is added.
  void solve(float* u) const;

  int64_t n_rows() const;
  int64_t dim() const { return d_; }
  bool over_determined() const;
  bool used_fallback() const;

 private:
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const RowMat> rows_view(int64_t begin, int64_t count) const;
  void grow_row_space(int64_t m0, int64_t m1);
  void build_column_space();
  void update_column_space(int64_t m0, int64_t m1);
  bool near_singular(const Eigen::LLT<Eigen::MatrixXd>& llt) const;

  int64_t d_;
  double ridge_;
  double delta_ = -1;
  int64_t m_ = 0;
  std::vector<double> A_;  // m_ x d_, row-major
  Eigen::VectorXd a_;
  bool column_mode_ = false;
  bool fallback_ = false;
  Eigen::MatrixXd L_;                      // row mode: lower factor, m_ x m_
  Eigen::MatrixXd H_;                      // column mode: A^T A + delta I
  Eigen::LLT<Eigen::MatrixXd> H_llt_;      // column mode: its factor
  Eigen::VectorXd b_;                      // column mode: A^T a
  mutable std::mutex mu_;
};

}  // namespace axn
