// Int8 attention (spec.py's Int8Attention), one (batch, head) per call: the scores are exact
// integer dot products of the uint8 query with the key (zero point 128, i.e. int8), then the
// graph's float steps in its order (x qk_scale, x score_mul, + mask, softmax, / p_scale
// rounded half to even), then the exact integer product of the quantized probabilities with
// the value, x pv_scale, written straight into [B, S, H*D] (the graph's transposes vanish).
//
// Paths: AVX-512 VNNI `vpdpbusd` (u8 x s8, exact for full-range int8); AVX2 (and AVX-512BW
// without VNNI) widen to int16 and use `vpmaddwd`, exact too (|255 * 128| * 2 < 2^31);
// SSE4.1 and older run the scalar loops. Softmax uses a Cephes-style float32 exp (about 1 ulp);
// the probabilities it gives can differ from ONNX Runtime's own Softmax in the last bit, so a
// probability on a rounding boundary may quantize one step apart (parity checks bound it).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels.h"
#include "kernels_internal.h"
#include "near_half.h"

#define TGT_AVX2 __attribute__((target("avx2,fma")))
#define TGT_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

namespace st {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// The softmax's exps read exactly 0 below kExpFloor (e^-80, about 2^-115.4). Masked keys and
// the far tail of a peaked row otherwise leave e near 1e-38, and e * (1 / sum) then falls in
// float's denormal range, where every vector operation takes a microcode assist: on real
// BERT activations (padded batches, peaked rows) the attention ran 3.4x slower for it. Such an
// e quantizes to p = 0 whenever p_scale >= 2^-113 (e / sum / p_scale <= 0.5, which rounds to
// even 0); below that the floor is off (`ExpFloor`) and the graph's tiny probabilities stay.
// The row sum, >= 1, moves by less than S * 2^-115, far inside the exp's own 1-ulp error.
constexpr float kExpFloor = -80.f;
float ExpFloor(const AttentionArgs& a) { return a.p_scale >= 0x1p-113f ? kExpFloor : kNegInf; }

int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Queries taken at a time by the AVX2 and VNNI heads: each key or value load feeds this many
// multiplies (two measured slower, eight no faster than four).
constexpr int kQueryBlock = 4;

// One (batch, head): row r of an operand starts at base + r * ld; `maskp` is the batch's mask
// row padded with -inf to a multiple of 16 keys (padded keys get probability ~0 and a zero
// value row, so they never count).
struct HeadView {
  const uint8_t *q, *k, *v;
  int64_t ld, s, d;
  const float* maskp;
  float* out;
  uint8_t* out_u8;  // Int8AttentionToU8: the quantized context instead of `out`
};

// ---------------------------------------------------------------------------------- scalar

void SoftmaxRowScalar(const int32_t* acc, const HeadView& h, const AttentionArgs& a,
                      float* tmp, uint8_t* pq) {
  float m = kNegInf;
  for (int64_t j = 0; j < h.s; ++j) {
    float x = static_cast<float>(acc[j]) * a.qk_scale;
    x = x * a.score_mul;
    x = x + h.maskp[j];
    tmp[j] = x, m = std::max(m, x);
  }
  float sum = 0.f;
  for (int64_t j = 0; j < h.s; ++j) sum += (tmp[j] = std::exp(tmp[j] - m));
  for (int64_t j = 0; j < h.s; ++j) pq[j] = QuantizeScalar(tmp[j] / sum, a.p_scale, a.p_zp);
}

void HeadScalar(const HeadView& h, const AttentionArgs& a) {
  std::vector<int32_t> acc(h.s);
  std::vector<float> tmp(h.s);
  std::vector<uint8_t> pq(h.s);
  for (int64_t i = 0; i < h.s; ++i) {
    const uint8_t* qi = h.q + i * h.ld;
    for (int64_t j = 0; j < h.s; ++j) {
      const uint8_t* kj = h.k + j * h.ld;
      int32_t sum = 0;
      for (int64_t t = 0; t < h.d; ++t) sum += (qi[t] - a.q_zp) * (kj[t] - 128);
      acc[j] = sum;
    }
    SoftmaxRowScalar(acc.data(), h, a, tmp.data(), pq.data());
    for (int64_t t = 0; t < h.d; ++t) {
      int32_t sum = 0;
      for (int64_t j = 0; j < h.s; ++j) sum += (pq[j] - a.p_zp) * (h.v[j * h.ld + t] - 128);
      const float y = static_cast<float>(sum) * a.pv_scale;
      if (h.out_u8 != nullptr) {
        h.out_u8[i * h.ld + t] = QuantizeScalar(y, a.y_scale, a.y_zp);
      } else {
        h.out[i * h.ld + t] = y;
      }
    }
  }
}

// ------------------------------------------------------------------------------------ AVX2

// Cephes expf for x <= 0: below -87 it returns ~1e-38, below `floor` 0 (kExpFloor); NaN
// (a row masked whole with -inf) stays as before the floor, ~1e-38.
TGT_AVX2 __m256 Exp256(__m256 x, __m256 floor) {
  const __m256 kept = _mm256_cmp_ps(x, floor, _CMP_NLT_UQ);
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f),
                                                   _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), kept);
}

TGT_AVX2 float HMax256(__m256 v) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  return *std::max_element(t, t + 8);
}

TGT_AVX2 float HSum256(__m256 v) {
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  float s = 0.f;
  for (float x : t) s += x;
  return s;
}

// Row softmax over s16 = RoundUp(s, 16) entries (pads are -inf scores).
TGT_AVX2 void SoftmaxRowAvx2(const int32_t* acc, int64_t s16, const float* maskp,
                             const AttentionArgs& a, float* tmp, uint8_t* pq) {
  // Max and sum in four partial vectors (vector j / 8 into part (j / 8) % 4; s16 / 8 is even):
  // one chain each had made the row latency-bound.
  const __m256 qk = _mm256_set1_ps(a.qk_scale), mul = _mm256_set1_ps(a.score_mul);
  __m256 part[4];
  for (auto& v : part) v = _mm256_set1_ps(kNegInf);
  for (int64_t j = 0; j < s16; j += 8) {
    __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i*)(acc + j))), qk);
    x = _mm256_add_ps(_mm256_mul_ps(x, mul), _mm256_loadu_ps(maskp + j));
    _mm256_storeu_ps(tmp + j, x);
    part[(j / 8) % 4] = _mm256_max_ps(part[(j / 8) % 4], x);
  }
  const __m256 m = _mm256_set1_ps(
      HMax256(_mm256_max_ps(_mm256_max_ps(part[0], part[1]), _mm256_max_ps(part[2], part[3]))));
  for (auto& v : part) v = _mm256_setzero_ps();
  const __m256 floor = _mm256_set1_ps(ExpFloor(a));
  for (int64_t j = 0; j < s16; j += 8) {
    const __m256 e = Exp256(_mm256_sub_ps(_mm256_loadu_ps(tmp + j), m), floor);
    _mm256_storeu_ps(tmp + j, e);
    part[(j / 8) % 4] = _mm256_add_ps(part[(j / 8) % 4], e);
  }
  const __m256 total =
      _mm256_add_ps(_mm256_add_ps(part[0], part[1]), _mm256_add_ps(part[2], part[3]));
  const float row_sum = HSum256(total);
  const __m256 sum = _mm256_set1_ps(row_sum), ps = _mm256_set1_ps(a.p_scale);
  const __m256 cap = _mm256_set1_ps(kQuotientCap);
  const __m256i zp = _mm256_set1_epi32(a.p_zp), lo = _mm256_setzero_si256();
  const __m256i hi = _mm256_set1_epi32(255);
  // multiply, and divide only near ties, as the AVX-512 softmax (near_half.h)
  const bool fast = NormalReciprocal(a.p_scale) && NormalReciprocal(row_sum);
  const __m256 inv = _mm256_set1_ps(1.f / row_sum), inv_ps = _mm256_set1_ps(1.f / a.p_scale);
  for (int64_t j = 0; j < s16; j += 8) {
    const __m256 e = _mm256_loadu_ps(tmp + j);
    __m256 quotient = _mm256_mul_ps(_mm256_mul_ps(e, inv), inv_ps);
    if (!fast || NearHalf256(quotient)) quotient = _mm256_div_ps(_mm256_div_ps(e, sum), ps);
    const __m256 p = _mm256_min_ps(quotient, cap);  // a tiny p_scale must not wrap to 0
    __m256i v = _mm256_add_epi32(_mm256_cvtps_epi32(p), zp);  // rounds half to even (MXCSR)
    v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(pq + j), _mm_packus_epi16(w, w));
  }
}

// Key as int16 pairs [d2][s16][2] (k - 128), value as [s2][d8 rounded to 8][2] (v - 128).
void PackInt16(const HeadView& h, int64_t s16, int64_t d2, int64_t dv8, int16_t* kp,
               int16_t* vp) {
  std::memset(kp, 0, sizeof(int16_t) * d2 * s16 * 2);
  std::memset(vp, 0, sizeof(int16_t) * (s16 / 2) * dv8 * 2);
  for (int64_t j = 0; j < h.s; ++j) {
    for (int64_t t = 0; t < h.d; ++t) {
      kp[((t / 2) * s16 + j) * 2 + t % 2] = static_cast<int16_t>(h.k[j * h.ld + t] - 128);
      vp[((j / 2) * dv8 + t) * 2 + j % 2] = static_cast<int16_t>(h.v[j * h.ld + t] - 128);
    }
  }
}

// The int16 pairs of one query, (q - zp), a missing odd column 0: `out` holds d2 words.
void QueryPairs(const uint8_t* qi, int64_t d, int32_t q_zp, int32_t* out) {
  for (int64_t t = 0; t < (d + 1) / 2; ++t) {
    const int32_t lo = qi[2 * t] - q_zp;
    const int32_t hi = 2 * t + 1 < d ? qi[2 * t + 1] - q_zp : 0;
    out[t] = (lo & 0xffff) | (hi << 16);
  }
}

// Scores of NQ queries (qpair rows d2 apart, acc rows s16 apart): each key load feeds NQ
// vpmaddwd.
template <int NQ>
TGT_AVX2 void ScoresAvx2(const int16_t* kp, const int32_t* qpair, int64_t d2, int64_t s16,
                         int32_t* acc) {
  for (int64_t j0 = 0; j0 < s16; j0 += 16) {
    __m256i c[NQ][2];
    for (auto& row : c) row[0] = row[1] = _mm256_setzero_si256();
    for (int64_t t = 0; t < d2; ++t) {
      const int16_t* row = kp + (t * s16 + j0) * 2;
      const __m256i k0 = _mm256_loadu_si256((const __m256i*)row);
      const __m256i k1 = _mm256_loadu_si256((const __m256i*)(row + 16));
      for (int q = 0; q < NQ; ++q) {
        const __m256i b = _mm256_set1_epi32(qpair[q * d2 + t]);
        c[q][0] = _mm256_add_epi32(c[q][0], _mm256_madd_epi16(b, k0));
        c[q][1] = _mm256_add_epi32(c[q][1], _mm256_madd_epi16(b, k1));
      }
    }
    for (int q = 0; q < NQ; ++q) {
      _mm256_storeu_si256((__m256i*)(acc + q * s16 + j0), c[q][0]);
      _mm256_storeu_si256((__m256i*)(acc + q * s16 + j0 + 8), c[q][1]);
    }
  }
}

// Context columns [d0, d0 + 8 * NB) of NQ queries (ppair rows s16 / 2 apart, res rows dv8
// apart): each value load feeds NQ vpmaddwd.
template <int NQ, int NB>
TGT_AVX2 void ContextAvx2(const int16_t* vp, const int32_t* ppair, int64_t s16, int64_t dv8,
                          int64_t d0, float pv_scale, float* res) {
  __m256i c[NQ][NB];
  for (auto& row : c) {
    for (auto& v : row) v = _mm256_setzero_si256();
  }
  for (int64_t t = 0; t < s16 / 2; ++t) {
    __m256i v[NB];
    for (int b = 0; b < NB; ++b) {
      v[b] = _mm256_loadu_si256((const __m256i*)(vp + (t * dv8 + d0 + 8 * b) * 2));
    }
    for (int q = 0; q < NQ; ++q) {
      const __m256i p = _mm256_set1_epi32(ppair[q * (s16 / 2) + t]);
      for (int b = 0; b < NB; ++b) c[q][b] = _mm256_add_epi32(c[q][b], _mm256_madd_epi16(p, v[b]));
    }
  }
  const __m256 scale = _mm256_set1_ps(pv_scale);
  for (int q = 0; q < NQ; ++q) {
    for (int b = 0; b < NB; ++b) {
      const __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(c[q][b]), scale);
      _mm256_storeu_ps(res + q * dv8 + d0 + 8 * b, y);
    }
  }
}

// QuantizeLinear of one context row (as QuantizeScalar: / scale, half to even, + zp,
// saturated; the quotient clamped to +-kQuotientCap first, as every vector quantizer here).
TGT_AVX2 void QuantizeRowAvx2(const float* y, int64_t n, const AttentionArgs& a, uint8_t* out) {
  const __m256 vs = _mm256_set1_ps(a.y_scale), cap = _mm256_set1_ps(kQuotientCap);
  const __m256 neg_cap = _mm256_set1_ps(-kQuotientCap);
  const __m256i zp = _mm256_set1_epi32(a.y_zp), lo = _mm256_setzero_si256();
  const __m256i hi = _mm256_set1_epi32(255);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_div_ps(_mm256_loadu_ps(y + i), vs);
    __m256i q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(x, neg_cap), cap));
    q = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(q, zp), lo), hi);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(w, w));
  }
  for (; i < n; ++i) out[i] = QuantizeScalar(y[i], a.y_scale, a.y_zp);
}

// NQ queries from i through scores, softmax and context (buffers sized for kQueryBlock).
template <int NQ>
TGT_AVX2 void QueriesAvx2(const HeadView& h, const AttentionArgs& a, int64_t i, int64_t s16,
                          int64_t dv8, const int16_t* kp, const int16_t* vp, int32_t* qpair,
                          int32_t* acc, float* tmp, uint8_t* pq, int32_t* ppair, float* res) {
  const int64_t d2 = (h.d + 1) / 2, s2 = s16 / 2;
  for (int q = 0; q < NQ; ++q) QueryPairs(h.q + (i + q) * h.ld, h.d, a.q_zp, qpair + q * d2);
  ScoresAvx2<NQ>(kp, qpair, d2, s16, acc);
  for (int q = 0; q < NQ; ++q) {
    uint8_t* row = pq + q * s16;
    SoftmaxRowAvx2(acc + q * s16, s16, h.maskp, a, tmp, row);
    for (int64_t t = 0; t < s2; ++t) {  // (p - zp) pairs; padded keys have zero values
      ppair[q * s2 + t] = ((row[2 * t] - a.p_zp) & 0xffff) | ((row[2 * t + 1] - a.p_zp) << 16);
    }
  }
  int64_t d0 = 0;
  for (; d0 + 16 <= dv8; d0 += 16) ContextAvx2<NQ, 2>(vp, ppair, s16, dv8, d0, a.pv_scale, res);
  for (; d0 < dv8; d0 += 8) ContextAvx2<NQ, 1>(vp, ppair, s16, dv8, d0, a.pv_scale, res);
  for (int q = 0; q < NQ; ++q) {
    if (h.out_u8 != nullptr) {
      QuantizeRowAvx2(res + q * dv8, h.d, a, h.out_u8 + (i + q) * h.ld);
    } else {
      std::memcpy(h.out + (i + q) * h.ld, res + q * dv8, sizeof(float) * h.d);
    }
  }
}

// kQueryBlock queries at a time, as HeadVnni.
TGT_AVX2 void HeadAvx2(const HeadView& h, const AttentionArgs& a) {
  const int64_t s16 = RoundUp(h.s, 16), d2 = (h.d + 1) / 2, dv8 = RoundUp(h.d, 8);
  std::vector<int16_t> kp(d2 * s16 * 2), vp((s16 / 2) * dv8 * 2);
  PackInt16(h, s16, d2, dv8, kp.data(), vp.data());
  std::vector<int32_t> acc(kQueryBlock * s16), qpair(kQueryBlock * d2);
  std::vector<int32_t> ppair(kQueryBlock * (s16 / 2));
  std::vector<float> tmp(s16), res(kQueryBlock * dv8);
  std::vector<uint8_t> pq(kQueryBlock * s16);
  int64_t i = 0;
  for (; i + kQueryBlock <= h.s; i += kQueryBlock) {
    QueriesAvx2<kQueryBlock>(h, a, i, s16, dv8, kp.data(), vp.data(), qpair.data(), acc.data(),
                   tmp.data(), pq.data(), ppair.data(), res.data());
  }
  for (; i < h.s; ++i) {
    QueriesAvx2<1>(h, a, i, s16, dv8, kp.data(), vp.data(), qpair.data(), acc.data(),
                   tmp.data(), pq.data(), ppair.data(), res.data());
  }
}

// ------------------------------------------------------------------------------ AVX-512 VNNI

TGT_VNNI __m512 Exp512(__m512 x, __m512 floor) {  // as Exp256
  const __mmask16 kept = _mm512_cmp_ps_mask(x, floor, _CMP_NLT_UQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(
      _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
  return _mm512_maskz_scalef_ps(kept, p, n);
}

// Softmax of NQ score rows in lockstep (rows s16 apart in acc, tmp and pq), each pass's max
// and sum in four partial vectors: one chain per row had left the row latency-bound. The
// float steps are the graph's; only the order of the sum's additions is fixed differently.
template <int NQ>
TGT_VNNI void SoftmaxRows512(const int32_t* acc, int64_t s16, const float* maskp,
                             const AttentionArgs& a, float* tmp, uint8_t* pq) {
  const __m512 qk = _mm512_set1_ps(a.qk_scale), mul = _mm512_set1_ps(a.score_mul);
  __m512 part[NQ][4];
  for (int q = 0; q < NQ; ++q) {
    for (auto& v : part[q]) v = _mm512_set1_ps(kNegInf);
  }
  for (int64_t j = 0; j < s16; j += 16) {
    const __m512 mask = _mm512_loadu_ps(maskp + j);
    for (int q = 0; q < NQ; ++q) {
      __m512 x = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(acc + q * s16 + j)), qk);
      x = _mm512_add_ps(_mm512_mul_ps(x, mul), mask);
      _mm512_storeu_ps(tmp + q * s16 + j, x);
      __m512& m = part[q][(j / 16) % 4];
      m = _mm512_max_ps(m, x);
    }
  }
  __m512 top[NQ];
  for (int q = 0; q < NQ; ++q) {
    const __m512* v = part[q];
    top[q] = _mm512_set1_ps(_mm512_reduce_max_ps(
        _mm512_max_ps(_mm512_max_ps(v[0], v[1]), _mm512_max_ps(v[2], v[3]))));
    for (auto& p : part[q]) p = _mm512_setzero_ps();
  }
  const __m512 floor = _mm512_set1_ps(ExpFloor(a));
  for (int64_t j = 0; j < s16; j += 16) {
    for (int q = 0; q < NQ; ++q) {
      const __m512 e =
          Exp512(_mm512_sub_ps(_mm512_loadu_ps(tmp + q * s16 + j), top[q]), floor);
      _mm512_storeu_ps(tmp + q * s16 + j, e);
      __m512& sum = part[q][(j / 16) % 4];
      sum = _mm512_add_ps(sum, e);
    }
  }
  const __m512 ps = _mm512_set1_ps(a.p_scale), cap = _mm512_set1_ps(kQuotientCap);
  const __m512i zp = _mm512_set1_epi32(a.p_zp), lo = _mm512_setzero_si512();
  const __m512i hi = _mm512_set1_epi32(255);
  const __m512 inv2 = _mm512_set1_ps(1.f / a.p_scale);
  const bool ps_normal = NormalReciprocal(a.p_scale);
  for (int q = 0; q < NQ; ++q) {
    const __m512* v = part[q];
    const float total = _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(v[0], v[1]), _mm512_add_ps(v[2], v[3])));
    const __m512 sum = _mm512_set1_ps(total);
    // the softmax had been a third of the attention, half of it in the divisions (near_half.h)
    const bool fast = ps_normal && NormalReciprocal(total);
    const __m512 inv1 = _mm512_set1_ps(1.f / total);
    for (int64_t j = 0; j < s16; j += 16) {
      const __m512 e = _mm512_loadu_ps(tmp + q * s16 + j);
      __m512 quotient = _mm512_mul_ps(_mm512_mul_ps(e, inv1), inv2);
      if (!fast || NearHalf512(quotient)) quotient = _mm512_div_ps(_mm512_div_ps(e, sum), ps);
      const __m512 p = _mm512_min_ps(quotient, cap);  // kQuotientCap, as SoftmaxRowAvx2
      __m512i r = _mm512_add_epi32(_mm512_cvtps_epi32(p), zp);  // half to even (MXCSR)
      r = _mm512_min_epi32(_mm512_max_epi32(r, lo), hi);
      _mm_storeu_si128((__m128i*)(pq + q * s16 + j), _mm512_cvtepi32_epi8(r));
    }
  }
}

// QuantizeLinear of 16 context values to bytes (as QuantizeRowAvx2).
TGT_VNNI inline __m128i Quantize512(__m512 y, const AttentionArgs& a) {
  const __m512 x = _mm512_div_ps(y, _mm512_set1_ps(a.y_scale));
  const __m512 capped = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-kQuotientCap)),
                                      _mm512_set1_ps(kQuotientCap));
  __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(capped), _mm512_set1_epi32(a.y_zp));
  q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_setzero_si512()), _mm512_set1_epi32(255));
  return _mm512_cvtepi32_epi8(q);
}

TGT_VNNI inline __mmask64 ByteMask(int64_t n) {  // the first min(n, 64) bytes
  return n >= 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1;
}

// Key as int8 [d4][s16][4] (k - 128): each key row's 4-byte words scattered to their
// columns; padded keys and columns stay zero.
TGT_VNNI void PackKeyVnni(const HeadView& h, int64_t s16, int64_t d4, int8_t* kp) {
  std::memset(kp, 0, d4 * s16 * 4);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i stride = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6,
                                                             5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(static_cast<int32_t>(s16)));
  for (int64_t j = 0; j < h.s; ++j) {
    for (int64_t t0 = 0; t0 < h.d; t0 += 64) {
      const __mmask64 m = ByteMask(h.d - t0);
      const __m512i w = _mm512_maskz_mov_epi8(m, _mm512_xor_si512(
          _mm512_maskz_loadu_epi8(m, h.k + j * h.ld + t0), flip));  // fmt: skip
      const __mmask16 words = static_cast<__mmask16>(
          (std::min<int64_t>(16, d4 - t0 / 4) >= 16) ? 0xffff : (1u << (d4 - t0 / 4)) - 1);
      int32_t* base = reinterpret_cast<int32_t*>(kp) + (t0 / 4) * s16 + j;
      _mm512_mask_i32scatter_epi32(base, words, stride, w, 4);
    }
  }
}

// Value as int8 [s4][d16][4] (v - 128): four key rows interleaved byte by byte, 16 columns
// per step (missing rows read as 128, i.e. zero after the shift; columns past D masked off).
TGT_VNNI void PackValueVnni(const HeadView& h, int64_t s16, int64_t d16, int8_t* vp) {
  std::memset(vp, 0, (s16 / 4) * d16 * 4);
  const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80));
  for (int64_t j4 = 0; j4 * 4 < h.s; ++j4) {
    for (int64_t t0 = 0; t0 < h.d; t0 += 16) {
      const __mmask16 m = static_cast<__mmask16>(h.d - t0 >= 16 ? 0xffff : (1u << (h.d - t0)) - 1);
      __m128i r[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t j = 4 * j4 + i;
        r[i] = j < h.s ? _mm_maskz_xor_epi32(0xf, _mm_mask_loadu_epi8(flip, m, h.v + j * h.ld + t0), flip)
                       : _mm_setzero_si128();
      }
      const __m128i a = _mm_unpacklo_epi8(r[0], r[1]), b = _mm_unpackhi_epi8(r[0], r[1]);
      const __m128i c = _mm_unpacklo_epi8(r[2], r[3]), d = _mm_unpackhi_epi8(r[2], r[3]);
      int8_t* out = vp + (j4 * d16 + t0) * 4;
      _mm_storeu_si128((__m128i*)out, _mm_unpacklo_epi16(a, c));
      _mm_storeu_si128((__m128i*)(out + 16), _mm_unpackhi_epi16(a, c));
      _mm_storeu_si128((__m128i*)(out + 32), _mm_unpacklo_epi16(b, d));
      _mm_storeu_si128((__m128i*)(out + 48), _mm_unpackhi_epi16(b, d));
    }
  }
}

// Sums of the packed int8 quads, 16 lanes at a time (vpdpbusd with ones): ksum[j] over a key's
// columns, vsum[t] over a column's keys; they undo vpdpbusd's unshifted uint8 zero point.
TGT_VNNI void QuadSums(const int8_t* packed, int64_t outer, int64_t inner, int32_t* sums) {
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t i0 = 0; i0 < inner; i0 += 16) {
    __m512i acc = _mm512_setzero_si512();
    for (int64_t o = 0; o < outer; ++o) {
      acc = _mm512_dpbusd_epi32(acc, ones, _mm512_loadu_si512(packed + (o * inner + i0) * 4));
    }
    _mm512_storeu_si512(sums + i0, acc);
  }
}

#define ST_DOT(C, P, V) C = _mm512_dpbusd_epi32(C, P, V)

// The 4 x 4 block both products run: c[4 q + b] = sum over t < n of the int32 at
// bq + q * q_stride + 4 t (4 uint8, broadcast) . the 64 int8 at m + t * m_step + 64 b. Named
// accumulators, not inlined: inlined into the head with an array of accumulators, GCC had
// stored every accumulator to the stack after each vpdpbusd (the attention 6% slower).
TGT_VNNI __attribute__((noinline)) void Dot4x4(const uint8_t* bq, int64_t q_stride,
                                               const int8_t* m, int64_t m_step, int64_t n,
                                               __m512i* c) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0;
  __m512i b3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0, d0 = a0, d1 = a0, d2 = a0, d3 = a0;
  for (int64_t t = 0; t < n; ++t, m += m_step) {
    int32_t w[4];
    for (int q = 0; q < 4; ++q) std::memcpy(&w[q], bq + q * q_stride + 4 * t, 4);
    const __m512i p0 = _mm512_set1_epi32(w[0]), p1 = _mm512_set1_epi32(w[1]);
    const __m512i p2 = _mm512_set1_epi32(w[2]), p3 = _mm512_set1_epi32(w[3]);
    __m512i v = _mm512_loadu_si512(m);
    ST_DOT(a0, p0, v), ST_DOT(b0, p1, v), ST_DOT(c0, p2, v), ST_DOT(d0, p3, v);
    v = _mm512_loadu_si512(m + 64);
    ST_DOT(a1, p0, v), ST_DOT(b1, p1, v), ST_DOT(c1, p2, v), ST_DOT(d1, p3, v);
    v = _mm512_loadu_si512(m + 128);
    ST_DOT(a2, p0, v), ST_DOT(b2, p1, v), ST_DOT(c2, p2, v), ST_DOT(d2, p3, v);
    v = _mm512_loadu_si512(m + 192);
    ST_DOT(a3, p0, v), ST_DOT(b3, p1, v), ST_DOT(c3, p2, v), ST_DOT(d3, p3, v);
  }
  const __m512i all[16] = {a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3};
  for (int i = 0; i < 16; ++i) c[i] = all[i];
}

// Scores of NQ queries (q4 rows d4 apart, acc rows s16 apart) against 16 * NB keys from j0:
// each key load feeds NQ vpdpbusd.
template <int NQ, int NB>
TGT_VNNI void ScoresVnni(const int8_t* kp, const int32_t* ksum, const uint32_t* q4, int64_t d4,
                         int64_t s16, int64_t j0, int32_t q_zp, int32_t* acc) {
  __m512i c[NQ][NB];
  if constexpr (NQ == 4 && NB == 4) {
    Dot4x4(reinterpret_cast<const uint8_t*>(q4), d4 * 4, kp + j0 * 4, s16 * 4, d4, &c[0][0]);
  } else {
    for (int q = 0; q < NQ; ++q) {
      for (int b = 0; b < NB; ++b) c[q][b] = _mm512_setzero_si512();
    }
    for (int64_t t = 0; t < d4; ++t) {
      const int8_t* row = kp + (t * s16 + j0) * 4;
      for (int b = 0; b < NB; ++b) {
        const __m512i k = _mm512_loadu_si512(row + 64 * b);
        for (int q = 0; q < NQ; ++q) {
          const __m512i qb = _mm512_set1_epi32(static_cast<int32_t>(q4[q * d4 + t]));
          c[q][b] = _mm512_dpbusd_epi32(c[q][b], qb, k);
        }
      }
    }
  }
  const __m512i zp = _mm512_set1_epi32(q_zp);
  for (int b = 0; b < NB; ++b) {
    const __m512i corr = _mm512_mullo_epi32(zp, _mm512_loadu_si512(ksum + j0 + 16 * b));
    for (int q = 0; q < NQ; ++q) {
      _mm512_storeu_si512(acc + q * s16 + j0 + 16 * b, _mm512_sub_epi32(c[q][b], corr));
    }
  }
}

template <int NQ>
TGT_VNNI void QueryScoresVnni(const int8_t* kp, const int32_t* ksum, const uint32_t* q4,
                              int64_t d4, int64_t s16, int32_t q_zp, int32_t* acc) {
  int64_t j0 = 0;
  for (; j0 + 64 <= s16; j0 += 64) ScoresVnni<NQ, 4>(kp, ksum, q4, d4, s16, j0, q_zp, acc);
  for (; j0 < s16; j0 += 16) ScoresVnni<NQ, 1>(kp, ksum, q4, d4, s16, j0, q_zp, acc);
}

// Context columns [d0, d0 + 16 * NB) of NQ queries from row i (pq rows s16 apart): each
// value load feeds NQ vpdpbusd.
template <int NQ, int NB>
TGT_VNNI void ContextColumnsVnni(const int8_t* vp, const int32_t* vsum, const uint8_t* pq,
                                 int64_t s16, int64_t d16, int64_t d0, const HeadView& h,
                                 const AttentionArgs& a, int64_t i) {
  __m512i c[NQ][NB];
  if constexpr (NQ == 4 && NB == 4) {
    Dot4x4(pq, s16, vp + d0 * 4, d16 * 4, s16 / 4, &c[0][0]);
  } else {
    for (int q = 0; q < NQ; ++q) {
      for (int b = 0; b < NB; ++b) c[q][b] = _mm512_setzero_si512();
    }
    for (int64_t t = 0; t < s16 / 4; ++t) {
      const int8_t* row = vp + (t * d16 + d0) * 4;
      for (int b = 0; b < NB; ++b) {
        const __m512i v = _mm512_loadu_si512(row + 64 * b);
        for (int q = 0; q < NQ; ++q) {
          int32_t p4;
          std::memcpy(&p4, pq + q * s16 + 4 * t, 4);
          c[q][b] = _mm512_dpbusd_epi32(c[q][b], _mm512_set1_epi32(p4), v);
        }
      }
    }
  }
  const __m512 scale = _mm512_set1_ps(a.pv_scale);
  const __m512i zp = _mm512_set1_epi32(a.p_zp);
  for (int b = 0; b < NB; ++b) {
    const int64_t col = d0 + 16 * b;
    const __m512i corr = _mm512_mullo_epi32(zp, _mm512_loadu_si512(vsum + col));
    const int64_t left = std::min<int64_t>(16, h.d - col);
    if (left <= 0) continue;
    const __mmask16 m = static_cast<__mmask16>((1u << left) - 1);
    for (int q = 0; q < NQ; ++q) {
      const __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c[q][b], corr)), scale);
      const int64_t at = (i + q) * h.ld + col;
      if (h.out_u8 != nullptr) {
        _mm_mask_storeu_epi8(h.out_u8 + at, m, Quantize512(y, a));
      } else {
        _mm512_mask_storeu_ps(h.out + at, m, y);
      }
    }
  }
}

template <int NQ>
TGT_VNNI void ContextVnni(const int8_t* vp, const int32_t* vsum, const uint8_t* pq, int64_t s16,
                          int64_t d16, const HeadView& h, const AttentionArgs& a, int64_t i) {
  int64_t d0 = 0;
  for (; d0 + 64 <= d16; d0 += 64) ContextColumnsVnni<NQ, 4>(vp, vsum, pq, s16, d16, d0, h, a, i);
  for (; d0 < d16; d0 += 16) ContextColumnsVnni<NQ, 1>(vp, vsum, pq, s16, d16, d0, h, a, i);
}

// NQ queries from i through scores, softmax and context.
template <int NQ>
TGT_VNNI void QueriesVnni(const HeadView& h, const AttentionArgs& a, int64_t i, int64_t s16,
                          int64_t d4, int64_t d16, const int8_t* kp, const int8_t* vp,
                          const int32_t* ksum, const int32_t* vsum, uint32_t* q4, int32_t* acc,
                          float* tmp, uint8_t* pq) {
  std::fill(q4, q4 + NQ * d4, 0u);
  for (int q = 0; q < NQ; ++q) {  // zero padded to a multiple of 4
    std::memcpy(q4 + q * d4, h.q + (i + q) * h.ld, h.d);
  }
  QueryScoresVnni<NQ>(kp, ksum, q4, d4, s16, a.q_zp, acc);
  SoftmaxRows512<NQ>(acc, s16, h.maskp, a, tmp, pq);
  ContextVnni<NQ>(vp, vsum, pq, s16, d16, h, a, i);
}

TGT_VNNI void HeadVnni(const HeadView& h, const AttentionArgs& a) {
  const int64_t s16 = RoundUp(h.s, 16), d4 = (h.d + 3) / 4, d16 = RoundUp(h.d, 16);
  std::vector<int8_t> kp(d4 * s16 * 4), vp((s16 / 4) * d16 * 4);
  std::vector<int32_t> ksum(s16), vsum(d16), acc(kQueryBlock * s16);
  PackKeyVnni(h, s16, d4, kp.data());
  PackValueVnni(h, s16, d16, vp.data());
  QuadSums(kp.data(), d4, s16, ksum.data());
  QuadSums(vp.data(), s16 / 4, d16, vsum.data());
  std::vector<uint32_t> q4(kQueryBlock * d4);
  std::vector<float> tmp(kQueryBlock * s16);
  std::vector<uint8_t> pq(kQueryBlock * s16);
  int64_t i = 0;
  for (; i + kQueryBlock <= h.s; i += kQueryBlock) {
    QueriesVnni<kQueryBlock>(h, a, i, s16, d4, d16, kp.data(), vp.data(), ksum.data(), vsum.data(),
                   q4.data(), acc.data(), tmp.data(), pq.data());
  }
  for (; i < h.s; ++i) {
    QueriesVnni<1>(h, a, i, s16, d4, d16, kp.data(), vp.data(), ksum.data(), vsum.data(),
                   q4.data(), acc.data(), tmp.data(), pq.data());
  }
}

// ------------------------------------------------------------------------------------ AMX

// With AMX tiles (Sapphire Rapids and later) the two products run as TDPBUSD (u8 x s8 into
// int32, the same integers as vpdpbusd) on 16 queries at a time: scores [16 x 16 keys] per
// tile op with the whole head dimension (<= 64 bytes) as its depth, context [16 x 16 columns]
// per 64 keys. Packing, softmax and the epilogue are the VNNI path's, so results are its bits.
// Tile registers (macros: GCC's tile intrinsics paste the number into the instruction).
#define kTileQ 0
#define kTileK 1
#define kTileS 2
#define kTileP 3
#define kTileV 4
#define kTileC 5

TGT_AMX void ConfigureTiles(int64_t d4) {
  TileConfig c;
  const int widths[][3] = {{kTileQ, 16, static_cast<int>(d4 * 4)}, {kTileK, static_cast<int>(d4), 64},
                           {kTileS, 16, 64}, {kTileP, 16, 64}, {kTileV, 16, 64}, {kTileC, 16, 64}};
  for (const auto& w : widths) c.rows[w[0]] = w[1], c.colsb[w[0]] = w[2];
  _tile_loadconfig(&c);
}

// Scores of 16 queries (qbuf [16][64] bytes) against every key: acc [16][s64] int32.
TGT_AMX void ScoresAmx(const uint8_t* qbuf, const int8_t* kp, const int32_t* ksum, int64_t s64,
                       int32_t q_zp, int32_t* acc) {
  _tile_loadd(kTileQ, qbuf, 64);
  for (int64_t j0 = 0; j0 < s64; j0 += 16) {
    _tile_zero(kTileS);
    _tile_loadd(kTileK, kp + j0 * 4, s64 * 4);
    _tile_dpbusd(kTileS, kTileQ, kTileK);
    _tile_stored(kTileS, acc + j0, s64 * 4);
  }
  const __m512i zp = _mm512_set1_epi32(q_zp);
  for (int64_t j = 0; j < s64; j += 16) {
    const __m512i corr = _mm512_mullo_epi32(zp, _mm512_loadu_si512(ksum + j));
    for (int r = 0; r < 16; ++r) {
      int32_t* row = acc + r * s64 + j;
      _mm512_storeu_si512(row, _mm512_sub_epi32(_mm512_loadu_si512(row), corr));
    }
  }
}

// Context of `rows` queries from row i: pq [16][s64], vp [s64 / 4][d16][4].
TGT_AMX void ContextAmx(const uint8_t* pq, const int8_t* vp, const int32_t* vsum, int64_t s64,
                        int64_t d16, const HeadView& h, const AttentionArgs& a, int64_t i,
                        int64_t rows) {
  alignas(64) int32_t ctx[16 * 16];
  const __m512 scale = _mm512_set1_ps(a.pv_scale);
  for (int64_t d0 = 0; d0 < d16; d0 += 16) {
    _tile_zero(kTileC);
    for (int64_t k0 = 0; k0 < s64; k0 += 64) {
      _tile_loadd(kTileP, pq + k0, s64);
      _tile_loadd(kTileV, vp + ((k0 / 4) * d16 + d0) * 4, d16 * 4);
      _tile_dpbusd(kTileC, kTileP, kTileV);
    }
    _tile_stored(kTileC, ctx, 64);
    const __m512i corr = _mm512_mullo_epi32(_mm512_set1_epi32(a.p_zp), _mm512_loadu_si512(vsum + d0));
    const __mmask16 m = static_cast<__mmask16>((1u << std::min<int64_t>(16, h.d - d0)) - 1);
    for (int64_t r = 0; r < rows; ++r) {
      const __m512i c = _mm512_sub_epi32(_mm512_load_si512(ctx + r * 16), corr);
      const __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(c), scale);
      const int64_t at = (i + r) * h.ld + d0;
      if (h.out_u8 != nullptr) {
        _mm_mask_storeu_epi8(h.out_u8 + at, m, Quantize512(y, a));
      } else {
        _mm512_mask_storeu_ps(h.out + at, m, y);
      }
    }
  }
}

// Keys padded to s64 (a multiple of 64, the context product's depth): padded keys have zero
// key and value rows and a -inf mask, as the VNNI path's padding to 16.
TGT_AMX void HeadAmx(const HeadView& h, const AttentionArgs& a) {
  const int64_t s64 = RoundUp(h.s, 64), d4 = (h.d + 3) / 4, d16 = RoundUp(h.d, 16);
  std::vector<int8_t> kp(d4 * s64 * 4), vp((s64 / 4) * d16 * 4);
  std::vector<int32_t> ksum(s64), vsum(d16), acc(16 * s64);
  PackKeyVnni(h, s64, d4, kp.data());
  PackValueVnni(h, s64, d16, vp.data());
  QuadSums(kp.data(), d4, s64, ksum.data());
  QuadSums(vp.data(), s64 / 4, d16, vsum.data());
  std::vector<float> tmp(4 * s64);
  std::vector<uint8_t> pq(16 * s64, 0);
  alignas(64) uint8_t qbuf[16 * 64];
  ConfigureTiles(d4);
  for (int64_t i = 0; i < h.s; i += 16) {
    const int64_t rows = std::min<int64_t>(16, h.s - i);
    std::memset(qbuf, 0, sizeof(qbuf));
    for (int64_t r = 0; r < rows; ++r) std::memcpy(qbuf + r * 64, h.q + (i + r) * h.ld, h.d);
    ScoresAmx(qbuf, kp.data(), ksum.data(), s64, a.q_zp, acc.data());
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
      SoftmaxRows512<4>(acc.data() + r0 * s64, s64, h.maskp, a, tmp.data(), pq.data() + r0 * s64);
    }
    ContextAmx(pq.data(), vp.data(), vsum.data(), s64, d16, h, a, i, rows);
  }
  _tile_release();
}

// Tiles pay only where they add no padding: keys padded to 64 (the context product's depth)
// cost more than the VNNI path's padding to 16 saves, and each head pays for the tile setup.
// Measured per op (docs/kernels.md, 1 thread, Sapphire Rapids): amx / vnni = 3.3 at 16 keys,
// 1.8 at 48, 2.1 at 96, about 1.0 at 64, 0.94-0.96 at 128 and 0.82-0.93 at 256.
bool TilesPay(int64_t s, int64_t d) { return d <= 64 && s >= 128 && RoundUp(s, 16) % 64 == 0; }

}  // namespace

void AttentionHead(Isa isa, const AttentionArgs& a, int64_t bh) {
  const int64_t b = bh / a.heads, hd = bh % a.heads, ld = a.heads * a.head_dim;
  const int64_t off = b * a.seq * ld + hd * a.head_dim;
  std::vector<float> maskp(RoundUp(a.seq, 64), kNegInf);  // HeadAmx pads keys to 64
  std::copy(a.mask + b * a.seq, a.mask + (b + 1) * a.seq, maskp.begin());
  const bool u8 = a.out_u8 != nullptr;
  const HeadView h{a.q + off, a.k + off, a.v + off, ld, a.seq, a.head_dim, maskp.data(),
                   u8 ? nullptr : a.out + off, u8 ? a.out_u8 + off : nullptr};
  switch (isa) {
    case kAmx: return TilesPay(a.seq, a.head_dim) ? HeadAmx(h, a) : HeadVnni(h, a);
    case kAvx512vnni: return HeadVnni(h, a);
    case kAvx512bw:
    case kAvx2: return HeadAvx2(h, a);
    default: return HeadScalar(h, a);
  }
}

}  // namespace st
