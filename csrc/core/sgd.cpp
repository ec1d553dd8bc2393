#include "core/sgd.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/check.hpp"
#include "core/parallel.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#define AXN_X86 1
#include <immintrin.h>
#define AXN_AVX2 __attribute__((target("avx2,fma")))
#endif

namespace axn {
namespace {

// splitmix64: a tiny portable generator, so shuffles are the same everywhere.
struct SplitMix {
  uint64_t s;
  explicit SplitMix(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // uniform in [0, n) (Lemire's multiply-shift; the tiny bias is irrelevant here)
  uint64_t below(uint64_t n) { return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }
};

template <class T>
void shuffle(T* a, int64_t n, SplitMix& rng) {
  for (int64_t i = n - 1; i > 0; --i) std::swap(a[i], a[rng.below(static_cast<uint64_t>(i) + 1)]);
}

// ---------------------------------------------------------------- one SGD step
// e = r - p.q;  p <- (1 - lr reg) p + lr e q;  q <- (1 - lr reg) q + lr e p (old p).
// Returns e. The core is compiled with -ffp-contract=off: the order below is the result.
float step_scalar(float* p, float* q, int64_t d, float r, float lr, float reg) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t d8 = d - d % 8;
  for (int64_t j = 0; j < d8; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] = acc[l] + p[j + l] * q[j + l];
  float s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
  for (int64_t j = d8; j < d; ++j) s = s + p[j] * q[j];
  const float e = r - s;
  const float a = lr * e, b = 1.0f - lr * reg;
  for (int64_t j = 0; j < d; ++j) {
    const float pj = p[j], qj = q[j];
    p[j] = b * pj + a * qj;
    q[j] = b * qj + a * pj;
  }
  return e;
}

#ifdef AXN_X86
AXN_AVX2 float step_avx2(float* p, float* q, int64_t d, float r, float lr, float reg) {
  const int64_t d8 = d - d % 8;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < d8; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(p + j), _mm256_loadu_ps(q + j), acc);
  __m128 lo = _mm256_castps256_ps128(acc), hi = _mm256_extractf128_ps(acc, 1);
  __m128 s4 = _mm_add_ps(lo, hi);
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
  float s = _mm_cvtss_f32(s4);
  for (int64_t j = d8; j < d; ++j) s = s + p[j] * q[j];
  const float e = r - s;
  const float a = lr * e, b = 1.0f - lr * reg;
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  for (int64_t j = 0; j < d8; j += 8) {
    const __m256 pj = _mm256_loadu_ps(p + j), qj = _mm256_loadu_ps(q + j);
    _mm256_storeu_ps(p + j, _mm256_fmadd_ps(va, qj, _mm256_mul_ps(vb, pj)));
    _mm256_storeu_ps(q + j, _mm256_fmadd_ps(va, pj, _mm256_mul_ps(vb, qj)));
  }
  for (int64_t j = d8; j < d; ++j) {
    const float pj = p[j], qj = q[j];
    p[j] = b * pj + a * qj;
    q[j] = b * qj + a * pj;
  }
  return e;
}

AXN_AVX2 double rmse_sum_avx2(const float* p, const float* q, int64_t d, float r) {
  const int64_t d8 = d - d % 8;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < d8; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(p + j), _mm256_loadu_ps(q + j), acc);
  alignas(32) float t[8];
  _mm256_store_ps(t, acc);
  double s = 0;
  for (int l = 0; l < 8; ++l) s += t[l];
  for (int64_t j = d8; j < d; ++j) s += static_cast<double>(p[j]) * q[j];
  const double e = r - s;
  return e * e;
}
#endif

double rmse_sum_scalar(const float* p, const float* q, int64_t d, float r) {
  double s = 0;
  for (int64_t j = 0; j < d; ++j) s += static_cast<double>(p[j]) * q[j];
  const double e = r - s;
  return e * e;
}

using StepFn = float (*)(float*, float*, int64_t, float, float, float);
using ErrFn = double (*)(const float*, const float*, int64_t, float);

bool use_avx2() {
#ifdef AXN_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

StepFn pick_step() {
#ifdef AXN_X86
  if (use_avx2()) return step_avx2;
#endif
  return step_scalar;
}

ErrFn pick_err() {
#ifdef AXN_X86
  if (use_avx2()) return rmse_sum_avx2;
#endif
  return rmse_sum_scalar;
}

void check_entries(const int64_t* rows, const int64_t* cols, const float* vals, int64_t nnz, int64_t n_rows,
                   int64_t n_cols) {
  AXN_CHECK(nnz >= 0, "nnz must be >= 0");
  for (int64_t e = 0; e < nnz; ++e) {
    AXN_CHECK(rows[e] >= 0 && rows[e] < n_rows,
              "entry " << e << " has row " << rows[e] << ", outside [0, " << n_rows << ")");
    AXN_CHECK(cols[e] >= 0 && cols[e] < n_cols,
              "entry " << e << " has column " << cols[e] << ", outside [0, " << n_cols << ")");
    AXN_CHECK(std::isfinite(vals[e]), "entry " << e << " has a non-finite value");
  }
}

}  // namespace

SparseSgd::SparseSgd(const int64_t* rows, const int64_t* cols, const float* vals, int64_t nnz, int64_t n_rows,
                     int64_t n_cols, int64_t n_blocks, uint64_t seed)
    : nnz_(nnz), n_rows_(n_rows), n_cols_(n_cols), B_(n_blocks), seed_(seed) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  AXN_CHECK(n_rows >= 1 && n_rows <= kMax, "n_rows must be in [1, 2^31), got " << n_rows);
  AXN_CHECK(n_cols >= 1 && n_cols <= kMax, "n_cols must be in [1, 2^31), got " << n_cols);
  AXN_CHECK(n_blocks >= 1 && n_blocks <= 4096, "n_blocks must be in [1, 4096], got " << n_blocks);
  check_entries(rows, cols, vals, nnz, n_rows, n_cols);

  // Random, balanced assignment of rows / columns to blocks.
  SplitMix rng(seed ^ 0x5851f42d4c957f2dULL);
  auto assign = [&](int64_t n) {
    std::vector<int32_t> perm(n);
    for (int64_t i = 0; i < n; ++i) perm[i] = static_cast<int32_t>(i);
    shuffle(perm.data(), n, rng);
    std::vector<int32_t> block(n);
    for (int64_t pos = 0; pos < n; ++pos) block[perm[pos]] = static_cast<int32_t>(pos * B_ / n);
    return block;
  };
  const std::vector<int32_t> row_block = assign(n_rows), col_block = assign(n_cols);

  // Counting sort of the entries into their blocks.
  const int64_t nb = B_ * B_;
  block_start_.assign(nb + 1, 0);
  std::vector<int32_t> entry_block(nnz);
  for (int64_t e = 0; e < nnz; ++e) {
    const int32_t b = static_cast<int32_t>(row_block[rows[e]] * B_ + col_block[cols[e]]);
    entry_block[e] = b;
    ++block_start_[b + 1];
  }
  for (int64_t b = 0; b < nb; ++b) block_start_[b + 1] += block_start_[b];
  entries_.resize(nnz);
  std::vector<int64_t> fill(block_start_.begin(), block_start_.end() - 1);
  for (int64_t e = 0; e < nnz; ++e)
    entries_[fill[entry_block[e]]++] =
        Entry{static_cast<int32_t>(rows[e]), static_cast<int32_t>(cols[e]), vals[e]};
  for (int64_t b = 0; b < nb; ++b) shuffle(entries_.data() + block_start_[b], block_start_[b + 1] - block_start_[b], rng);
}

double SparseSgd::epoch(float* U, float* V, int64_t d, float lr, float reg, int num_threads,
                        int64_t epoch_index) const {
  AXN_CHECK(d >= 1, "d must be >= 1, got " << d);
  AXN_CHECK(std::isfinite(lr) && lr > 0, "lr must be finite and > 0, got " << lr);
  AXN_CHECK(std::isfinite(reg) && reg >= 0, "reg must be finite and >= 0, got " << reg);
  if (nnz_ == 0) return 0.0;
  const StepFn step = pick_step();

  // A fresh order of strata each epoch (the blocks of one stratum are independent).
  std::vector<int64_t> strata(B_);
  for (int64_t s = 0; s < B_; ++s) strata[s] = s;
  SplitMix rng(seed_ + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(epoch_index + 1));
  shuffle(strata.data(), B_, rng);

  const int threads = static_cast<int>(std::min<int64_t>(
      plan_threads(num_threads, static_cast<double>(nnz_) * static_cast<double>(d) * 4.0), B_));
  std::vector<double> sq(B_ * B_, 0.0);
  for (int64_t s : strata) {
    parallel_for(B_, threads, [&](int64_t begin, int64_t end, int) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r * B_ + (r + s) % B_;
        double acc = 0;
        for (int64_t e = block_start_[b]; e < block_start_[b + 1]; ++e) {
          const Entry& x = entries_[e];
          const float err = step(U + static_cast<int64_t>(x.row) * d, V + static_cast<int64_t>(x.col) * d, d,
                                 x.val, lr, reg);
          acc += static_cast<double>(err) * err;
        }
        sq[b] = acc;
      }
    });
  }
  double total = 0;
  for (double v : sq) total += v;
  return std::sqrt(total / static_cast<double>(nnz_));
}

double sparse_rmse(const int64_t* rows, const int64_t* cols, const float* vals, int64_t nnz, const float* U,
                   int64_t n_rows, const float* V, int64_t n_cols, int64_t d, int num_threads) {
  AXN_CHECK(d >= 1, "d must be >= 1, got " << d);
  check_entries(rows, cols, vals, nnz, n_rows, n_cols);
  if (nnz == 0) return 0.0;
  const ErrFn err = pick_err();
  constexpr int64_t kChunk = 4096;
  const int64_t n_chunks = (nnz + kChunk - 1) / kChunk;
  std::vector<double> part(n_chunks, 0.0);
  const int threads = plan_threads(num_threads, static_cast<double>(nnz) * static_cast<double>(d));
  parallel_for(n_chunks, threads, [&](int64_t begin, int64_t end, int) {
    for (int64_t c = begin; c < end; ++c) {
      double acc = 0;
      for (int64_t e = c * kChunk; e < std::min(nnz, (c + 1) * kChunk); ++e)
        acc += err(U + rows[e] * d, V + cols[e] * d, d, vals[e]);
      part[c] = acc;
    }
  });
  double total = 0;
  for (double v : part) total += v;
  return std::sqrt(total / static_cast<double>(nnz));
}

}  // namespace axn
