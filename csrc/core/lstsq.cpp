#include "core/lstsq.hpp"

#include <cmath>

#include "core/check.hpp"

namespace axn {
namespace {
// Relative size under which a direction of float32 rows is treated as null.
constexpr double kRankThreshold = 1e-5;
}  // namespace

// A Cholesky pivot at the level of the ridge means the rows are (numerically)
// linearly dependent: the ridge solution would then amplify float32 rounding
// noise, so the solver switches to the rank-revealing fallback.
bool IncrementalLstsq::near_singular(const Eigen::LLT<Eigen::MatrixXd>& llt) const {
  return llt.matrixLLT().diagonal().array().square().minCoeff() < 1e3 * delta_;
}

IncrementalLstsq::IncrementalLstsq(int64_t dim, double ridge) : d_(dim), ridge_(ridge) {
  AXN_CHECK(dim >= 1, "dim must be >= 1, got " << dim);
  AXN_CHECK(std::isfinite(ridge) && ridge >= 0, "ridge must be finite and >= 0, got " << ridge);
}

int64_t IncrementalLstsq::n_rows() const {
  std::lock_guard<std::mutex> lock(mu_);
  return m_;
}

bool IncrementalLstsq::over_determined() const {
  std::lock_guard<std::mutex> lock(mu_);
  return column_mode_;
}

bool IncrementalLstsq::used_fallback() const {
  std::lock_guard<std::mutex> lock(mu_);
  return fallback_;
}

Eigen::Map<const IncrementalLstsq::RowMat> IncrementalLstsq::rows_view(int64_t begin, int64_t count) const {
  return Eigen::Map<const RowMat>(A_.data() + begin * d_, count, d_);
}

void IncrementalLstsq::add(const float* rows, const float* targets, int64_t m) {
  AXN_CHECK(m >= 0, "number of rows must be >= 0, got " << m);
  std::lock_guard<std::mutex> lock(mu_);
  if (m == 0) return;
  for (int64_t i = 0; i < m * d_; ++i) AXN_CHECK(std::isfinite(rows[i]), "rows must be finite");
  for (int64_t i = 0; i < m; ++i) AXN_CHECK(std::isfinite(targets[i]), "targets must be finite");
  const int64_t m0 = m_;
  A_.insert(A_.end(), rows, rows + m * d_);
  a_.conservativeResize(m0 + m);
  for (int64_t i = 0; i < m; ++i) a_[m0 + i] = targets[i];
  m_ = m0 + m;
  if (delta_ < 0) {
    const double mean_sq = rows_view(0, m).squaredNorm() / static_cast<double>(m);
    delta_ = ridge_ * (mean_sq > 0 ? mean_sq : 1.0);
  }
  if (fallback_) return;
  if (m_ <= d_) {
    grow_row_space(m0, m);
  } else if (!column_mode_) {
    build_column_space();
  } else {
    update_column_space(m0, m);
  }
}

void IncrementalLstsq::grow_row_space(int64_t m0, int64_t m1) {
  const auto B = rows_view(m0, m1);
  // Only lower triangles are formed (symmetric rank-k updates): LLT reads no more.
  Eigen::MatrixXd S = Eigen::MatrixXd::Zero(m1, m1);
  S.selfadjointView<Eigen::Lower>().rankUpdate(B);
  S.diagonal().array() += delta_;
  Eigen::MatrixXd X;  // L11^{-1} (A0 B^T), m0 x m1
  if (m0 > 0) {
    X = rows_view(0, m0) * B.transpose();
    L_.topLeftCorner(m0, m0).triangularView<Eigen::Lower>().solveInPlace(X);
    S.selfadjointView<Eigen::Lower>().rankUpdate(X.transpose(), -1.0);
  }
  Eigen::LLT<Eigen::MatrixXd> llt(S);
  if (llt.info() != Eigen::Success || near_singular(llt)) {
    fallback_ = true;
    return;
  }
  L_.conservativeResize(m0 + m1, m0 + m1);
  if (m0 > 0) {
    L_.block(m0, 0, m1, m0) = X.transpose();
    L_.block(0, m0, m0, m1).setZero();
  }
  L_.block(m0, m0, m1, m1) = llt.matrixL();
}

void IncrementalLstsq::build_column_space() {
  const auto A = rows_view(0, m_);
  H_ = Eigen::MatrixXd::Zero(d_, d_);
  H_.selfadjointView<Eigen::Lower>().rankUpdate(A.transpose());
  H_.diagonal().array() += delta_;
  b_ = A.transpose() * a_;
  L_.resize(0, 0);
  column_mode_ = true;
  H_llt_.compute(H_);
  if (H_llt_.info() != Eigen::Success || near_singular(H_llt_)) fallback_ = true;
}

void IncrementalLstsq::update_column_space(int64_t m0, int64_t m1) {
  const auto B = rows_view(m0, m1);
  H_.selfadjointView<Eigen::Lower>().rankUpdate(B.transpose());
  b_.noalias() += B.transpose() * a_.segment(m0, m1);
  if (m1 * 6 < d_) {  // a few rank-one updates cost less than refactoring
    for (int64_t i = 0; i < m1; ++i) {
      Eigen::VectorXd r = B.row(i).transpose();
      H_llt_.rankUpdate(r, 1.0);
    }
  } else {
    H_llt_.compute(H_);
  }
  if (H_llt_.info() != Eigen::Success || near_singular(H_llt_)) fallback_ = true;
}

void IncrementalLstsq::solve(float* u) const {
  std::lock_guard<std::mutex> lock(mu_);
  Eigen::VectorXd x;
  if (m_ == 0) {
    x = Eigen::VectorXd::Zero(d_);
  } else if (fallback_) {
    // Numerically rank-deficient rows: a pseudo-inverse that drops the
    // directions float32 inputs cannot resolve.
    Eigen::CompleteOrthogonalDecomposition<Eigen::MatrixXd> cod;
    cod.setThreshold(kRankThreshold);
    cod.compute(Eigen::MatrixXd(rows_view(0, m_)));
    x = cod.solve(a_);
  } else if (column_mode_) {
    x = H_llt_.solve(b_);
  } else {
    Eigen::VectorXd alpha = L_.triangularView<Eigen::Lower>().solve(a_);
    L_.triangularView<Eigen::Lower>().transpose().solveInPlace(alpha);
    x = rows_view(0, m_).transpose() * alpha;
  }
  for (int64_t j = 0; j < d_; ++j) u[j] = static_cast<float>(x[j]);
}

}  // namespace axn
