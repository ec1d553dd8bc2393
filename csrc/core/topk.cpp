#include "core/topk.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/check.hpp"
#include "core/dot.hpp"
#include "core/parallel.hpp"

namespace axn {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Cand {
  float s;
  int64_t id;
};

// The ranking, whatever the scores: larger first (+inf before every finite
// score, -inf after them), then NaN (an inner product that overflowed into
// inf - inf has no meaningful value, so it ranks after every real number);
// ties, NaN included, by smaller id. A strict weak ordering for any floats.
inline bool better(const Cand& a, const Cand& b) {
  const bool an = std::isnan(a.s), bn = std::isnan(b.s);
  if (an != bn) return bn;
  if (!an && a.s != b.s) return a.s > b.s;
  return a.id < b.id;
}

// Whether a score may still rank among the best: s >= floor, or NaN. NaN is
// let through whatever the floor (the next cut drops it if k better ones are
// there): one comparison per score, no dearer than s >= floor.
inline bool may_rank(float s, float floor) { return !(s < floor); }

// Keeps the best k candidates seen so far, plus (when slack > 0) every
// candidate within `slack` of the running k-th best. Candidates are appended
// to a buffer and the buffer is cut back when full: amortised O(1) per offer.
class Collector {
 public:
  Collector(int64_t k, float slack) : k_(k), slack_(slack), cap_(std::max<int64_t>(2 * k, k + 256)) {}

  // False when s surely ranks below the k best (exact) or below them by more
  // than the slack (approximate).
  bool admits(float s) const { return may_rank(s, floor_); }

  void push(float s, int64_t id) {
    buf_.push_back({s, id});
    if (static_cast<int64_t>(buf_.size()) >= cap_) prune();
  }

  std::vector<Cand>& candidates() { return buf_; }

 private:
  void prune() {
    std::nth_element(buf_.begin(), buf_.begin() + (k_ - 1), buf_.end(), better);
    const float kth = buf_[k_ - 1].s;
    if (slack_ > 0) {
      const float fl = kth - slack_;
      if (std::isfinite(fl)) {  // else nothing can be ruled out yet
        auto end = std::partition(buf_.begin() + k_, buf_.end(), [fl](const Cand& c) { return may_rank(c.s, fl); });
        buf_.erase(end, buf_.end());
        floor_ = fl;
      }
    } else {
      buf_.resize(k_);
      if (!std::isnan(kth)) floor_ = kth;
    }
    // Many near-ties survive a cut: grow the buffer so cuts stay rare.
    if (static_cast<int64_t>(buf_.size()) * 2 > cap_) cap_ *= 2;
  }

  int64_t k_;
  float slack_;
  int64_t cap_;
  float floor_ = kNegInf;
  std::vector<Cand> buf_;
};

// Sorted copies of the exclusion lists, validated.
class Exclusions {
 public:
  Exclusions(const ExcludeLists& ex, int64_t nq, int64_t n) {
    AXN_CHECK(ex.n_lists == 0 || ex.n_lists == 1 || ex.n_lists == nq,
              "exclude: expected no list, one list for all queries, or one list per query (" << nq
                                                                                            << "), got "
                                                                                            << ex.n_lists);
    lists_.resize(ex.n_lists);
    for (int64_t l = 0; l < ex.n_lists; ++l) {
      const int64_t b = ex.offsets[l], e = ex.offsets[l + 1];
      AXN_CHECK(0 <= b && b <= e, "exclude: offsets must be non-decreasing");
      auto& v = lists_[l];
      v.assign(ex.ids + b, ex.ids + e);
      for (int64_t id : v) AXN_CHECK(0 <= id && id < n, "exclude: id " << id << " is outside [0, " << n << ")");
      std::sort(v.begin(), v.end());
      v.erase(std::unique(v.begin(), v.end()), v.end());
    }
  }
  bool excluded(int64_t q, int64_t id) const {
    if (lists_.empty()) return false;
    const auto& v = lists_.size() == 1 ? lists_[0] : lists_[q];
    return !v.empty() && std::binary_search(v.begin(), v.end(), id);
  }

 private:
  std::vector<std::vector<int64_t>> lists_;
};

// Scans all rows with `score_rows(r0, rows, buf)` (buf[r * nq + q]) on several
// threads, each thread owning a contiguous range of rows and one collector per
// query, and returns the collectors' candidates merged per query.
template <class ScoreRows>
std::vector<std::vector<Cand>> scan(int64_t n, int64_t d, int64_t nq, int64_t k, const std::vector<float>& slack,
                                    const Exclusions& ex, int num_threads, ScoreRows score_rows) {
  const int threads = plan_threads(num_threads, static_cast<double>(n) * d * nq);
  std::vector<std::vector<Collector>> cols(threads);
  for (auto& c : cols) {
    c.reserve(nq);
    for (int64_t q = 0; q < nq; ++q) c.emplace_back(k, slack[q]);
  }
  const int64_t block = nq == 1 ? 256 : 60;
  parallel_for(n, threads, [&](int64_t begin, int64_t end, int t) {
    std::vector<float> buf(block * nq);
    std::vector<float> scratch(nq == 1 ? 0 : block * d);
    auto& mine = cols[t];
    for (int64_t r0 = begin; r0 < end; r0 += block) {
      const int64_t rows = std::min(block, end - r0);
      score_rows(r0, rows, buf.data(), scratch.data());
      for (int64_t q = 0; q < nq; ++q) {
        Collector& c = mine[q];
        for (int64_t r = 0; r < rows; ++r) {
          const float s = buf[r * nq + q];
          if (c.admits(s) && !ex.excluded(q, r0 + r)) c.push(s, r0 + r);
        }
      }
    }
  });
  std::vector<std::vector<Cand>> merged(nq);
  for (int64_t q = 0; q < nq; ++q) {
    auto& m = merged[q];
    for (auto& c : cols) {
      auto& v = c[q].candidates();
      m.insert(m.end(), v.begin(), v.end());
      std::vector<Cand>().swap(v);
    }
  }
  return merged;
}

void write_best(std::vector<Cand>& c, int64_t k, float* scores, int64_t* ids) {
  const int64_t m = std::min<int64_t>(k, static_cast<int64_t>(c.size()));
  if (m > 0) std::partial_sort(c.begin(), c.begin() + m, c.end(), better);
  for (int64_t j = 0; j < m; ++j) {
    // One NaN bit pattern whichever kernel produced it.
    scores[j] = std::isnan(c[j].s) ? std::numeric_limits<float>::quiet_NaN() : c[j].s;
    ids[j] = c[j].id;
  }
  for (int64_t j = m; j < k; ++j) {
    scores[j] = kNegInf;
    ids[j] = -1;
  }
}

void check_common(int64_t n, int64_t d, int64_t nq, int64_t k) {
  AXN_CHECK(n >= 0, "n_items must be >= 0, got " << n);
  AXN_CHECK(d >= 1, "dim must be >= 1, got " << d);
  AXN_CHECK(nq >= 0, "number of queries must be >= 0, got " << nq);
  AXN_CHECK(k >= 0, "k must be >= 0, got " << k);
}

// Items whose approximate score is within slack[q] of the k-th best cannot be
// ruled out: keep them, and re-score them in the canonical float32 order.
void rescore(std::vector<std::vector<Cand>>& merged, int64_t keep, const std::vector<float>& slack,
             const float* V32, const float* U, int64_t d) {
  for (size_t q = 0; q < merged.size(); ++q) {
    if (!(slack[q] > 0)) continue;
    auto& c = merged[q];
    if (static_cast<int64_t>(c.size()) > keep) {
      std::nth_element(c.begin(), c.begin() + (keep - 1), c.end(), better);
      const float fl = c[keep - 1].s - slack[q];
      if (std::isfinite(fl))
        c.erase(std::partition(c.begin() + keep, c.end(), [fl](const Cand& x) { return may_rank(x.s, fl); }),
                c.end());
    }
    for (auto& x : c) x.s = dot_f32(V32 + x.id * d, U + q * d, d);
  }
}

double norm2(const float* u, int64_t d) {
  double s = 0;
  for (int64_t j = 0; j < d; ++j) s += static_cast<double>(u[j]) * u[j];
  return std::sqrt(s);
}

// True when no partial sum of <v, u> (v a row of norm <= max_row_norm, or its
// float16 copy) can overflow float32 in any summation order: by Cauchy-Schwarz
// each is at most |u||v| up to rounding, far below 2^128. Only then do the
// rounding bounds of the approximate scans (tiled, float16) hold; otherwise
// the scan uses the exact kernel, whose scores every path shares.
bool cannot_overflow(const float* U, int64_t nq, int64_t d, double max_row_norm) {
  const double row = max_row_norm + std::sqrt(static_cast<double>(d)) * std::ldexp(1.0, -24);
  for (int64_t q = 0; q < nq; ++q)
    if (!(2 * norm2(U + q * d, d) * row < std::ldexp(1.0, 120))) return false;
  return true;
}

}  // namespace

void topk_ip_f32(const float* V, int64_t n, int64_t d, const float* U, int64_t nq, int64_t k,
                 const ExcludeLists& exclude, int num_threads, float* scores, int64_t* ids, double max_row_norm) {
  check_common(n, d, nq, k);
  const Exclusions ex(exclude, nq, n);
  const int64_t keep = std::min(k, n);
  std::vector<std::vector<Cand>> merged(nq);
  if (keep > 0 && nq > 0) {
    // Several queries with known row norms: the fast tiled kernel, then an exact re-score.
    const bool tiled = nq > 1 && std::isfinite(max_row_norm) && max_row_norm >= 0 &&
                       cannot_overflow(U, nq, d, max_row_norm);
    std::vector<float> slack(nq, 0.0f), Up;
    if (tiled) {
      for (int64_t q = 0; q < nq; ++q)
        slack[q] = static_cast<float>(gemm_order_error_bound(norm2(U + q * d, d), max_row_norm, d)) * 1.0001f;
      Up.resize(d * packed_width(nq));
      pack_queries(U, nq, d, Up.data());
    }
    merged = scan(n, d, nq, keep, slack, ex, num_threads, [&](int64_t r0, int64_t rows, float* buf, float*) {
      if (tiled)
        gemm_rows_f32(V + r0 * d, rows, d, U, Up.data(), nq, buf);
      else
        dot_rows_f32(V + r0 * d, rows, d, U, nq, buf);
    });
    if (tiled) rescore(merged, keep, slack, V, U, d);
  }
  for (int64_t q = 0; q < nq; ++q) write_best(merged[q], k, scores + q * k, ids + q * k);
}

double fp16_score_error_bound(const float* u, int64_t d, double max_row_norm) {
  double l1 = 0;
  for (int64_t j = 0; j < d; ++j) l1 += std::fabs(static_cast<double>(u[j]));
  const double l2 = norm2(u, d);
  const double unit = std::ldexp(1.0, -24);                       // float32 unit roundoff
  const double gamma = (d + 17) * unit / (1 - (d + 17) * unit);   // a float32 sum of d products
  const double half = std::ldexp(1.0, -11);                       // float16 unit roundoff
  const double sub = std::ldexp(1.0, -25);                        // float16 subnormal spacing / 2
  // |s16 - s32| <= |sum u (h - v)| + rounding of both sums (in any order)
  //            <= half * |u||v| + sub * |u|_1 + gamma * (|u||h| + |u||v|)
  return 1.01 * (l2 * max_row_norm * (half + gamma * (2 + half)) + sub * l1 * (1 + gamma)) + 1e-30;
}

void topk_ip_f16(const uint16_t* V16, const float* V32, double max_row_norm, int64_t n, int64_t d,
                 const float* U, int64_t nq, int64_t k, const ExcludeLists& exclude, int num_threads,
                 float* scores, int64_t* ids) {
  check_common(n, d, nq, k);
  AXN_CHECK(max_row_norm >= 0, "max_row_norm must be >= 0 (max_i ||V32[i]||_2), got " << max_row_norm);
  const Exclusions ex(exclude, nq, n);
  const int64_t keep = std::min(k, n);
  std::vector<std::vector<Cand>> merged(nq);
  if (keep > 0 && nq > 0 && !cannot_overflow(U, nq, d, max_row_norm)) {
    // Scores may overflow: the float16 bound means nothing, scan V32 exactly.
    const std::vector<float> none(nq, 0.0f);
    merged = scan(n, d, nq, keep, none, ex, num_threads, [&](int64_t r0, int64_t rows, float* buf, float*) {
      dot_rows_f32(V32 + r0 * d, rows, d, U, nq, buf);
    });
  } else if (keep > 0 && nq > 0) {
    std::vector<float> slack(nq), Up;
    for (int64_t q = 0; q < nq; ++q)
      slack[q] = static_cast<float>(2 * fp16_score_error_bound(U + q * d, d, max_row_norm)) * 1.0001f;
    if (nq > 1) {
      Up.resize(d * packed_width(nq));
      pack_queries(U, nq, d, Up.data());
    }
    merged = scan(n, d, nq, keep, slack, ex, num_threads, [&](int64_t r0, int64_t rows, float* buf, float* scratch) {
      if (nq > 1)
        gemm_rows_f16(V16 + r0 * d, rows, d, U, Up.data(), nq, buf, scratch);
      else
        dot_rows_f16(V16 + r0 * d, rows, d, U, nq, buf);
    });
    rescore(merged, keep, slack, V32, U, d);
  }
  for (int64_t q = 0; q < nq; ++q) write_best(merged[q], k, scores + q * k, ids + q * k);
}

}  // namespace axn
