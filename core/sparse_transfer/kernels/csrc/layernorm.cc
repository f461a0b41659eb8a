// ResidualLayerNorm (spec.py): y = LayerNorm(x + residual) * gamma + beta over the last axis,
// in the exported graph's steps (mean, x - mean, mean of squares, + epsilon, sqrt, divide,
// * gamma, + beta), optionally also QuantizeLinear(y) for the next Linear. Sums run in float32
// lanes, so mean and variance may differ from numpy's pairwise sums in the last bits.
#include <immintrin.h>

#include <cmath>

#include "kernels.h"
#include "kernels_internal.h"
#include "near_half.h"

#define TGT_AVX2 __attribute__((target("avx2,fma")))
#define TGT_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

namespace st {
namespace {

void RowScalar(const LayerNormArgs& a, int64_t r) {
  const float* x = a.x + r * a.n;
  const float* res = a.residual + r * a.n;
  float* y = a.y + r * a.n;
  double sum = 0.0;  // one sequential float32 sum would drift with n; double stays close
  for (int64_t i = 0; i < a.n; ++i) sum += (y[i] = x[i] + res[i]);
  const float mean = static_cast<float>(sum) / static_cast<float>(a.n);
  double sq = 0.0;
  for (int64_t i = 0; i < a.n; ++i) {
    const float d = y[i] - mean;
    sq += d * d;
  }
  const float root = std::sqrt(static_cast<float>(sq) / static_cast<float>(a.n) + a.epsilon);
  for (int64_t i = 0; i < a.n; ++i) {
    const float v = (y[i] - mean) / root * a.gamma[i] + a.beta[i];
    y[i] = v;
    if (a.yq != nullptr) a.yq[r * a.n + i] = QuantizeScalar(v, a.y_scale, a.y_zp);
  }
}

TGT_512 inline float Sum4(const __m512 v[4]) {
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(v[0], v[1]), _mm512_add_ps(v[2], v[3])));
}

TGT_512 void Row512(const LayerNormArgs& a, int64_t r) {
  const float* x = a.x + r * a.n;
  const float* res = a.residual + r * a.n;
  float* y = a.y + r * a.n;
  // Four partial sums per pass (vector j of the row into sum j % 4): one chain of 48 adds
  // had made both sums latency-bound. The order is fixed, so results never depend on threads.
  __m512 vsum[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                    _mm512_setzero_ps()};
  for (int64_t i = 0; i < a.n; i += 16) {
    const __mmask16 m = a.n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (a.n - i)) - 1);
    const __m512 s = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, res + i));
    _mm512_mask_storeu_ps(y + i, m, s);
    vsum[(i / 16) % 4] = _mm512_add_ps(vsum[(i / 16) % 4], s);
  }
  const float mean = Sum4(vsum) / static_cast<float>(a.n);
  const __m512 vmean = _mm512_set1_ps(mean);
  __m512 vsq[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
  for (int64_t i = 0; i < a.n; i += 16) {
    const __mmask16 m = a.n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (a.n - i)) - 1);
    const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, y + i), vmean);
    vsq[(i / 16) % 4] = _mm512_add_ps(vsq[(i / 16) % 4], _mm512_mul_ps(d, d));
  }
  const float root = std::sqrt(Sum4(vsq) / static_cast<float>(a.n) + a.epsilon);
  const __m512 vroot = _mm512_set1_ps(root), vs = _mm512_set1_ps(a.y_scale);
  const __m512 vs_inv = _mm512_set1_ps(1.f / a.y_scale);
  const bool fast = NormalReciprocal(a.y_scale);  // near_half.h
  const __m512 lim_lo = _mm512_set1_ps(-kQuotientCap), lim_hi = _mm512_set1_ps(kQuotientCap);
  const __m512i zp = _mm512_set1_epi32(a.y_zp), lo = _mm512_setzero_si512();
  const __m512i hi = _mm512_set1_epi32(255);
  for (int64_t i = 0; i < a.n; i += 16) {
    const __mmask16 m = a.n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (a.n - i)) - 1);
    __m512 v = _mm512_div_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, y + i), vmean), vroot);
    v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, a.gamma + i)),
                      _mm512_maskz_loadu_ps(m, a.beta + i));
    _mm512_mask_storeu_ps(y + i, m, v);
    if (a.yq != nullptr) {  // QuantizeLinear: / scale, half to even (MXCSR), + zp, saturate
      // Clamped to +-kQuotientCap first: a huge gamma must not wrap to 0.
      __m512 quotient = _mm512_mul_ps(v, vs_inv);
      if (!fast || NearHalf512(quotient)) quotient = _mm512_div_ps(v, vs);
      const __m512 scaled = _mm512_min_ps(_mm512_max_ps(quotient, lim_lo), lim_hi);
      __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(scaled), zp);
      q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
      _mm_mask_storeu_epi8(a.yq + r * a.n + i, m, _mm512_cvtepi32_epi8(q));
    }
  }
}

TGT_AVX2 float HSum8(__m256 v) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  float s = 0.f;
  for (float f : t) s += f;
  return s;
}

TGT_AVX2 inline __m256 Add4(const __m256 v[4]) {
  return _mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3]));
}

TGT_AVX2 void RowAvx2(const LayerNormArgs& a, int64_t r) {
  const float* x = a.x + r * a.n;
  const float* res = a.residual + r * a.n;
  float* y = a.y + r * a.n;
  const int64_t body = a.n / 8 * 8;
  // Four partial sums per pass (vector i / 8 into sum (i / 8) % 4), as Row512.
  __m256 part[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                    _mm256_setzero_ps()};
  for (int64_t i = 0; i < body; i += 8) {
    const __m256 s = _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(res + i));
    _mm256_storeu_ps(y + i, s);
    part[(i / 8) % 4] = _mm256_add_ps(part[(i / 8) % 4], s);
  }
  float sum = HSum8(Add4(part));
  for (int64_t i = body; i < a.n; ++i) sum += (y[i] = x[i] + res[i]);
  const float mean = sum / static_cast<float>(a.n);
  const __m256 vmean = _mm256_set1_ps(mean);
  for (auto& v : part) v = _mm256_setzero_ps();
  for (int64_t i = 0; i < body; i += 8) {
    const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(y + i), vmean);
    part[(i / 8) % 4] = _mm256_add_ps(part[(i / 8) % 4], _mm256_mul_ps(d, d));
  }
  float sq = HSum8(Add4(part));
  for (int64_t i = body; i < a.n; ++i) sq += (y[i] - mean) * (y[i] - mean);
  const float root = std::sqrt(sq / static_cast<float>(a.n) + a.epsilon);
  const __m256 vroot = _mm256_set1_ps(root), vs = _mm256_set1_ps(a.y_scale);
  const __m256 lim_lo = _mm256_set1_ps(-kQuotientCap), lim_hi = _mm256_set1_ps(kQuotientCap);
  const __m256i zp = _mm256_set1_epi32(a.y_zp), lo = _mm256_setzero_si256();
  const __m256i hi = _mm256_set1_epi32(255);
  for (int64_t i = 0; i < body; i += 8) {
    __m256 v = _mm256_div_ps(_mm256_sub_ps(_mm256_loadu_ps(y + i), vmean), vroot);
    v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_loadu_ps(a.gamma + i)), _mm256_loadu_ps(a.beta + i));
    _mm256_storeu_ps(y + i, v);
    if (a.yq != nullptr) {  // QuantizeLinear: / scale, half to even (MXCSR), + zp, saturate
      const __m256 scaled = _mm256_min_ps(_mm256_max_ps(_mm256_div_ps(v, vs), lim_lo), lim_hi);
      __m256i q = _mm256_add_epi32(_mm256_cvtps_epi32(scaled), zp);  // clamped as Row512
      q = _mm256_min_epi32(_mm256_max_epi32(q, lo), hi);
      const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(a.yq + r * a.n + i), _mm_packus_epi16(w, w));
    }
  }
  for (int64_t i = body; i < a.n; ++i) {
    y[i] = (y[i] - mean) / root * a.gamma[i] + a.beta[i];
    if (a.yq != nullptr) a.yq[r * a.n + i] = QuantizeScalar(y[i], a.y_scale, a.y_zp);
  }
}

}  // namespace

void LayerNormRows(Isa isa, const LayerNormArgs& a, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    switch (isa) {
      case kAmx:
      case kAvx512vnni:
      case kAvx512bw: Row512(a, r); break;
      case kAvx2: RowAvx2(a, r); break;
      default: RowScalar(a, r);
    }
  }
}

}  // namespace st
