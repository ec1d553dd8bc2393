#include "core/dot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#define AXN_X86 1
#include <immintrin.h>
#define AXN_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

namespace axn {

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal half: normalise into a float
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

namespace {

// ---------------------------------------------------------------- portable
// The core is compiled with -ffp-contract=off, so `acc + a * b` is never fused
// here and the order below is the whole definition of the result.
struct ScalarF32 {
  static float get(const float* p, int64_t j) { return p[j]; }
};
struct ScalarF16 {
  static float get(const uint16_t* p, int64_t j) { return half_to_float(p[j]); }
};

template <class L, class T>
float dot_scalar(const T* v, const float* u, int64_t d) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int64_t d8 = d - d % 8;
  for (int64_t j = 0; j < d8; j += 8)
    for (int l = 0; l < 8; ++l) acc[l] = acc[l] + L::get(v, j + l) * u[j + l];
  float s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
  for (int64_t j = d8; j < d; ++j) s = s + L::get(v, j) * u[j];
  return s;
}

template <class L, class T>
void dot_rows_scalar(const T* V, int64_t rows, int64_t d, const float* U, int64_t nq, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t q = 0; q < nq; ++q) out[r * nq + q] = dot_scalar<L>(V + r * d, U + q * d, d);
}

#ifdef AXN_X86
// ---------------------------------------------------------------- AVX2
struct LoadF32 {
  AXN_AVX2 static inline __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  AXN_AVX2 static inline float get(const float* p, int64_t j) { return p[j]; }
};
struct LoadF16 {
  AXN_AVX2 static inline __m256 load(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  AXN_AVX2 static inline float get(const uint16_t* p, int64_t j) { return _cvtsh_ss(p[j]); }
};

AXN_AVX2 inline float hsum(__m256 acc) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));  // l+l4
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));                                           // +l2
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));                                       // +l1
  return _mm_cvtss_f32(lo);
}

template <class L, class T>
AXN_AVX2 inline float tail(float s, const T* v, const float* u, int64_t d8, int64_t d) {
  for (int64_t j = d8; j < d; ++j) s = __builtin_fmaf(L::get(v, j), u[j], s);
  return s;
}

template <class L, class T>
AXN_AVX2 float dot_avx2(const T* v, const float* u, int64_t d) {
  const int64_t d8 = d - d % 8;
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < d8; j += 8) acc = _mm256_fmadd_ps(L::load(v + j), _mm256_loadu_ps(u + j), acc);
  return tail<L>(hsum(acc), v, u, d8, d);
}

// One query: four rows at a time share each load of the query.
template <class L, class T>
AXN_AVX2 void rows_x1_avx2(const T* V, int64_t rows, int64_t d, const float* u, float* out) {
  const int64_t d8 = d - d % 8;
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const T* v0 = V + r * d;
    const T* v1 = v0 + d;
    const T* v2 = v1 + d;
    const T* v3 = v2 + d;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t j = 0; j < d8; j += 8) {
      const __m256 uj = _mm256_loadu_ps(u + j);
      a0 = _mm256_fmadd_ps(L::load(v0 + j), uj, a0);
      a1 = _mm256_fmadd_ps(L::load(v1 + j), uj, a1);
      a2 = _mm256_fmadd_ps(L::load(v2 + j), uj, a2);
      a3 = _mm256_fmadd_ps(L::load(v3 + j), uj, a3);
    }
    out[r] = tail<L>(hsum(a0), v0, u, d8, d);
    out[r + 1] = tail<L>(hsum(a1), v1, u, d8, d);
    out[r + 2] = tail<L>(hsum(a2), v2, u, d8, d);
    out[r + 3] = tail<L>(hsum(a3), v3, u, d8, d);
  }
  for (; r < rows; ++r) out[r] = dot_avx2<L>(V + r * d, u, d);
}

// Several queries: tiles of 2 rows x 4 queries (8 accumulators), so each row
// load serves four queries and each query load two rows.
template <class L, class T>
AXN_AVX2 void rows_xq_avx2(const T* V, int64_t rows, int64_t d, const float* U, int64_t nq, float* out) {
  const int64_t d8 = d - d % 8;
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) {
    const T* v0 = V + r * d;
    const T* v1 = v0 + d;
    int64_t q = 0;
    for (; q + 4 <= nq; q += 4) {
      const float* u0 = U + q * d;
      const float* u1 = u0 + d;
      const float* u2 = u1 + d;
      const float* u3 = u2 + d;
      __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
      __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
      for (int64_t j = 0; j < d8; j += 8) {
        const __m256 x0 = L::load(v0 + j), x1 = L::load(v1 + j);
        __m256 y = _mm256_loadu_ps(u0 + j);
        a00 = _mm256_fmadd_ps(x0, y, a00);
        a10 = _mm256_fmadd_ps(x1, y, a10);
        y = _mm256_loadu_ps(u1 + j);
        a01 = _mm256_fmadd_ps(x0, y, a01);
        a11 = _mm256_fmadd_ps(x1, y, a11);
        y = _mm256_loadu_ps(u2 + j);
        a02 = _mm256_fmadd_ps(x0, y, a02);
        a12 = _mm256_fmadd_ps(x1, y, a12);
        y = _mm256_loadu_ps(u3 + j);
        a03 = _mm256_fmadd_ps(x0, y, a03);
        a13 = _mm256_fmadd_ps(x1, y, a13);
      }
      float* o0 = out + r * nq + q;
      float* o1 = o0 + nq;
      o0[0] = tail<L>(hsum(a00), v0, u0, d8, d);
      o0[1] = tail<L>(hsum(a01), v0, u1, d8, d);
      o0[2] = tail<L>(hsum(a02), v0, u2, d8, d);
      o0[3] = tail<L>(hsum(a03), v0, u3, d8, d);
      o1[0] = tail<L>(hsum(a10), v1, u0, d8, d);
      o1[1] = tail<L>(hsum(a11), v1, u1, d8, d);
      o1[2] = tail<L>(hsum(a12), v1, u2, d8, d);
      o1[3] = tail<L>(hsum(a13), v1, u3, d8, d);
    }
    for (; q < nq; ++q) {
      out[r * nq + q] = dot_avx2<L>(v0, U + q * d, d);
      out[(r + 1) * nq + q] = dot_avx2<L>(v1, U + q * d, d);
    }
  }
  for (; r < rows; ++r)
    for (int64_t q = 0; q < nq; ++q) out[r * nq + q] = dot_avx2<L>(V + r * d, U + q * d, d);
}

// GEMM-style micro-kernel: MR rows x W queries (W = 8 or 16) of accumulators
// held in registers; each step broadcasts one coordinate of each row and
// multiplies it with the packed coordinate of W queries.
template <int MR, int W>
AXN_AVX2 inline void micro(const float* V, int64_t d, const float* Up, int64_t nqp, float* out, int64_t nq,
                           int64_t q_valid) {
  // Fully unrolled so that GCC keeps the accumulators in registers.
  __m256 acc[MR][W / 8];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int w = 0; w < W / 8; ++w) acc[i][w] = _mm256_setzero_ps();
  for (int64_t j = 0; j < d; ++j) {
    const float* up = Up + j * nqp;
    __m256 u[W / 8];
#pragma GCC unroll 2
    for (int w = 0; w < W / 8; ++w) u[w] = _mm256_loadu_ps(up + 8 * w);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 b = _mm256_broadcast_ss(V + i * d + j);
#pragma GCC unroll 2
      for (int w = 0; w < W / 8; ++w) acc[i][w] = _mm256_fmadd_ps(b, u[w], acc[i][w]);
    }
  }
  alignas(32) float tmp[W];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 2
    for (int w = 0; w < W / 8; ++w) _mm256_store_ps(tmp + 8 * w, acc[i][w]);
    for (int64_t l = 0; l < q_valid; ++l) out[i * nq + l] = tmp[l];
  }
}

template <int W>
AXN_AVX2 void micro_rows(const float* V, int64_t rows, int64_t d, const float* Up, int64_t nqp, float* out,
                         int64_t nq, int64_t q_valid) {
  int64_t r = 0;
  for (; r + 6 <= rows; r += 6) micro<6, W>(V + r * d, d, Up, nqp, out + r * nq, nq, q_valid);
  switch (rows - r) {
    case 5: micro<5, W>(V + r * d, d, Up, nqp, out + r * nq, nq, q_valid); break;
    case 4: micro<4, W>(V + r * d, d, Up, nqp, out + r * nq, nq, q_valid); break;
    case 3: micro<3, W>(V + r * d, d, Up, nqp, out + r * nq, nq, q_valid); break;
    case 2: micro<2, W>(V + r * d, d, Up, nqp, out + r * nq, nq, q_valid); break;
    case 1: micro<1, W>(V + r * d, d, Up, nqp, out + r * nq, nq, q_valid); break;
    default: break;
  }
}

AXN_AVX2 void gemm_avx2(const float* V, int64_t rows, int64_t d, const float* Up, int64_t nq, float* out) {
  const int64_t nqp = packed_width(nq);
  for (int64_t q0 = 0; q0 < nqp; q0 += 16) {
    const int64_t valid = std::min<int64_t>(16, nq - q0);
    if (nqp - q0 >= 16)
      micro_rows<16>(V, rows, d, Up + q0, nqp, out + q0, nq, valid);
    else
      micro_rows<8>(V, rows, d, Up + q0, nqp, out + q0, nq, std::min<int64_t>(8, valid));
  }
}

AXN_AVX2 void f16_to_f32_avx2(const uint16_t* src, int64_t count, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < count; ++i) dst[i] = _cvtsh_ss(src[i]);
}

bool detect_simd() {
  // AXN_FAST_DISABLE_SIMD=1 forces the portable kernels (used by the tests).
  const char* off = std::getenv("AXN_FAST_DISABLE_SIMD");
  if (off && off[0] && off[0] != '0') return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
#else
bool detect_simd() { return false; }
#endif

const bool kSimd = detect_simd();

}  // namespace

bool simd_available() { return kSimd; }

void dot_rows_f32(const float* V, int64_t rows, int64_t d, const float* U, int64_t nq, float* out) {
#ifdef AXN_X86
  if (kSimd) {
    if (nq == 1)
      rows_x1_avx2<LoadF32>(V, rows, d, U, out);
    else
      rows_xq_avx2<LoadF32>(V, rows, d, U, nq, out);
    return;
  }
#endif
  dot_rows_scalar<ScalarF32>(V, rows, d, U, nq, out);
}

void dot_rows_f16(const uint16_t* V, int64_t rows, int64_t d, const float* U, int64_t nq, float* out) {
#ifdef AXN_X86
  if (kSimd) {
    if (nq == 1)
      rows_x1_avx2<LoadF16>(V, rows, d, U, out);
    else
      rows_xq_avx2<LoadF16>(V, rows, d, U, nq, out);
    return;
  }
#endif
  dot_rows_scalar<ScalarF16>(V, rows, d, U, nq, out);
}

int64_t packed_width(int64_t nq) { return (nq + 7) / 8 * 8; }

int64_t pack_queries(const float* U, int64_t nq, int64_t d, float* Up) {
  const int64_t nqp = packed_width(nq);
  for (int64_t j = 0; j < d; ++j)
    for (int64_t q = 0; q < nqp; ++q) Up[j * nqp + q] = q < nq ? U[q * d + j] : 0.0f;
  return nqp;
}

void gemm_rows_f32(const float* V, int64_t rows, int64_t d, const float* U, const float* Up, int64_t nq,
                   float* out) {
#ifdef AXN_X86
  if (kSimd) {
    gemm_avx2(V, rows, d, Up, nq, out);
    return;
  }
#endif
  (void)Up;
  dot_rows_scalar<ScalarF32>(V, rows, d, U, nq, out);
}

void gemm_rows_f16(const uint16_t* V, int64_t rows, int64_t d, const float* U, const float* Up, int64_t nq,
                   float* out, float* scratch) {
#ifdef AXN_X86
  if (kSimd) {
    f16_to_f32_avx2(V, rows * d, scratch);
    gemm_avx2(scratch, rows, d, Up, nq, out);
    return;
  }
#endif
  (void)Up;
  (void)scratch;
  dot_rows_scalar<ScalarF16>(V, rows, d, U, nq, out);
}

double gemm_order_error_bound(double u_norm, double max_row_norm, int64_t d) {
  if (!kSimd) return 0.0;
  const double unit = std::ldexp(1.0, -24);
  const double gamma = (d + 17) * unit / (1 - (d + 17) * unit);
  return 1.01 * 2 * gamma * u_norm * max_row_norm + 1e-30;
}

float dot_f32(const float* v, const float* u, int64_t d) {
#ifdef AXN_X86
  if (kSimd) return dot_avx2<LoadF32>(v, u, d);
#endif
  return dot_scalar<ScalarF32>(v, u, d);
}

}  // namespace axn
