// Instruction-set specific paths, each function compiled for its own target (no -march), and
// the dispatchers that pick one per call from the path chosen at load.
//
// Row kernels: activations of a tile are [kb][token][4 bytes]; for each kept 1x4 block of an
// output row its four weights are broadcast and multiplied with 4 bytes of every token:
// AVX-512 VNNI `vpdpbusd` (exact for any int8), AVX-512BW / AVX2 / SSSE3 `pmaddubsw` +
// `pmaddwd` (exact only when |w| <= 64: 2 * 255 * 64 < 32767; wider weights take the scalar
// row, which is exact).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels.h"
#include "kernels_internal.h"

#define TGT_SSE41 __attribute__((target("sse4.1,ssse3")))
#define TGT_AVX2 __attribute__((target("avx2,fma")))
#define TGT_512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define TGT_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

namespace st {
namespace {

TGT_SSE41 void RowSse41(const Packed& w, int64_t n, const uint8_t* ap, int32_t* acc) {
  __m128i c0 = _mm_setzero_si128(), c1 = c0, c2 = c0, c3 = c0;
  const __m128i ones = _mm_set1_epi16(1);
  for (int32_t b = w.row_ptr[n]; b < w.row_ptr[n + 1]; ++b) {
    const __m128i* p = reinterpret_cast<const __m128i*>(ap + static_cast<size_t>(w.col[b]) * 64);
    const __m128i wb = _mm_set1_epi32(w.w4[b]);
    c0 = _mm_add_epi32(c0, _mm_madd_epi16(_mm_maddubs_epi16(_mm_load_si128(p + 0), wb), ones));
    c1 = _mm_add_epi32(c1, _mm_madd_epi16(_mm_maddubs_epi16(_mm_load_si128(p + 1), wb), ones));
    c2 = _mm_add_epi32(c2, _mm_madd_epi16(_mm_maddubs_epi16(_mm_load_si128(p + 2), wb), ones));
    c3 = _mm_add_epi32(c3, _mm_madd_epi16(_mm_maddubs_epi16(_mm_load_si128(p + 3), wb), ones));
  }
  __m128i* o = reinterpret_cast<__m128i*>(acc);
  _mm_store_si128(o + 0, c0), _mm_store_si128(o + 1, c1);
  _mm_store_si128(o + 2, c2), _mm_store_si128(o + 3, c3);
}

TGT_AVX2 void RowAvx2(const Packed& w, int64_t n, const uint8_t* ap, int32_t* acc) {
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int32_t b = w.row_ptr[n]; b < w.row_ptr[n + 1]; ++b) {
    const __m256i* p =
        reinterpret_cast<const __m256i*>(ap + static_cast<size_t>(w.col[b]) * 128);
    const __m256i wb = _mm256_set1_epi32(w.w4[b]);
    c0 = _mm256_add_epi32(
        c0, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_load_si256(p + 0), wb), ones));
    c1 = _mm256_add_epi32(
        c1, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_load_si256(p + 1), wb), ones));
    c2 = _mm256_add_epi32(
        c2, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_load_si256(p + 2), wb), ones));
    c3 = _mm256_add_epi32(
        c3, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_load_si256(p + 3), wb), ones));
  }
  __m256i* o = reinterpret_cast<__m256i*>(acc);
  _mm256_store_si256(o + 0, c0), _mm256_store_si256(o + 1, c1);
  _mm256_store_si256(o + 2, c2), _mm256_store_si256(o + 3, c3);
}

// The row kernels compute G groups of 16 tokens (G = 4: the whole tile). A tile's last,
// partial group count is what its tokens need: batch 1 of a short sentence, or the pooler's
// one token, no longer pays for 64 (`ST_DEFINE_TILE512`). The integers are the same.
template <int G>
TGT_512 void RowAvx512bw(const Packed& w, int64_t n, const uint8_t* ap, int32_t* acc) {
  __m512i c[G];
  for (auto& v : c) v = _mm512_setzero_si512();
  const __m512i ones = _mm512_set1_epi16(1);
  for (int32_t b = w.row_ptr[n]; b < w.row_ptr[n + 1]; ++b) {
    const uint8_t* p = ap + static_cast<size_t>(w.col[b]) * kT512 * 4;
    const __m512i wb = _mm512_set1_epi32(w.w4[b]);
    for (int i = 0; i < G; ++i) {
      const __m512i prod = _mm512_maddubs_epi16(_mm512_load_si512(p + 64 * i), wb);
      c[i] = _mm512_add_epi32(c[i], _mm512_madd_epi16(prod, ones));
    }
  }
  for (int i = 0; i < G; ++i) _mm512_store_si512(acc + 16 * i, c[i]);
}

template <int G>
TGT_VNNI void RowAvx512vnni(const Packed& w, int64_t n, const uint8_t* ap, int32_t* acc) {
  __m512i c[G];
  for (auto& v : c) v = _mm512_setzero_si512();
  for (int32_t b = w.row_ptr[n]; b < w.row_ptr[n + 1]; ++b) {
    const uint8_t* p = ap + static_cast<size_t>(w.col[b]) * kT512 * 4;
    const __m512i wb = _mm512_set1_epi32(w.w4[b]);
    for (int i = 0; i < G; ++i) {
      c[i] = _mm512_dpbusd_epi32(c[i], _mm512_load_si512(p + 64 * i), wb);
    }
  }
  for (int i = 0; i < G; ++i) _mm512_store_si512(acc + 16 * i, c[i]);
}

// The quad form: 4 rows of 64 activation bytes (columns k1..k4, tokens laid out so that the
// byte unpacks below yield tokens in order) interleaved into 4 x 16 dwords [a_k1 .. a_k4],
// then one vpdpbusd per 16 tokens with the quad's 4 weights. Tokens 0-31 come from the low
// byte unpacks, 32-63 from the high ones; `Dot` is vpdpbusd or its AVX-512BW equivalent.
#define ST_ROW_QUAD(NAME, TGT, DOT)                                                          \
  template <int G>                                                                            \
  TGT void NAME(const Packed& w, int64_t n, const uint8_t* ap, int32_t* acc) {                \
    __m512i c[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),  \
                    _mm512_setzero_si512()};                                                  \
    const int32_t* off = w.quad_off.data();                                                   \
    for (int32_t q = w.quad_ptr[n]; q < w.quad_ptr[n + 1]; ++q) {                             \
      const __m512i x1 = _mm512_load_si512(ap + off[4 * q]);                                  \
      const __m512i x2 = _mm512_load_si512(ap + off[4 * q + 1]);                              \
      const __m512i x3 = _mm512_load_si512(ap + off[4 * q + 2]);                              \
      const __m512i x4 = _mm512_load_si512(ap + off[4 * q + 3]);                              \
      const __m512i wb = _mm512_set1_epi32(w.quad_w4[q]);                                     \
      const __m512i a = _mm512_unpacklo_epi8(x1, x2), c_ = _mm512_unpacklo_epi8(x3, x4);      \
      c[0] = DOT(c[0], _mm512_unpacklo_epi16(a, c_), wb);                                     \
      if (G > 1) c[1] = DOT(c[1], _mm512_unpackhi_epi16(a, c_), wb);                          \
      if (G > 2) {                                                                            \
        const __m512i b = _mm512_unpackhi_epi8(x1, x2), d = _mm512_unpackhi_epi8(x3, x4);     \
        c[2] = DOT(c[2], _mm512_unpacklo_epi16(b, d), wb);                                    \
        if (G > 3) c[3] = DOT(c[3], _mm512_unpackhi_epi16(b, d), wb);                         \
      }                                                                                       \
    }                                                                                         \
    for (int i = 0; i < G; ++i) _mm512_store_si512(acc + 16 * i, c[i]);                       \
  }

// The quad form on AVX-512 without VNNI (7-bit weights): vpmaddubsw + vpmaddwd.
TGT_512 inline __m512i Dot512bw(__m512i v, __m512i wb) {
  return _mm512_madd_epi16(_mm512_maddubs_epi16(v, wb), _mm512_set1_epi16(1));
}
TGT_512 inline __m512i DotAdd512bw(__m512i acc, __m512i v, __m512i wb) {
  return _mm512_add_epi32(acc, Dot512bw(v, wb));
}

ST_ROW_QUAD(RowQuadVnni, TGT_VNNI, _mm512_dpbusd_epi32)
ST_ROW_QUAD(RowQuad512bw, TGT_512, DotAdd512bw)

// In place, per 256-byte block column: [64 tokens][4 k] -> [4 k][64 bytes], where token
// 16j + 4l + i goes to byte 16l + 4j + i (the order RowQuadVnni's unpacks undo).
TGT_512 void BlocksToQuad512(int64_t kb, uint8_t* tile) {
  const __m512i ctrl = _mm512_broadcast_i32x4(
      _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
  for (int64_t b = 0; b < kb; ++b) {
    uint8_t* p = tile + b * 256;
    __m512i z[4];
    for (int j = 0; j < 4; ++j) z[j] = _mm512_shuffle_epi8(_mm512_load_si512(p + 64 * j), ctrl);
    const __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
    _mm512_store_si512(p, _mm512_unpacklo_epi64(t0, t2));
    _mm512_store_si512(p + 64, _mm512_unpackhi_epi64(t0, t2));
    _mm512_store_si512(p + 128, _mm512_unpacklo_epi64(t1, t3));
    _mm512_store_si512(p + 192, _mm512_unpackhi_epi64(t1, t3));
  }
}

// The quad form on AVX2 (7-bit weights): 32 tokens, the same byte/word unpacks in each
// 128-bit lane, u8 x s8 pair sums by vpmaddubsw (exact: |w| <= 64) widened by vpmaddwd.
TGT_AVX2 inline __m256i DotAvx2(__m256i v, __m256i wb) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(v, wb), _mm256_set1_epi16(1));
}

TGT_AVX2 inline __m256i Load32(const uint8_t* p) {
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(p));
}

TGT_AVX2 void RowQuadAvx2(const Packed& w, int64_t n, const uint8_t* ap, int32_t* acc) {
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
  const int32_t* off = w.quad_off.data();
  for (int32_t q = w.quad_ptr[n]; q < w.quad_ptr[n + 1]; ++q) {
    const __m256i x1 = Load32(ap + off[4 * q]), x2 = Load32(ap + off[4 * q + 1]);
    const __m256i x3 = Load32(ap + off[4 * q + 2]), x4 = Load32(ap + off[4 * q + 3]);
    const __m256i a = _mm256_unpacklo_epi8(x1, x2), b = _mm256_unpackhi_epi8(x1, x2);
    const __m256i c = _mm256_unpacklo_epi8(x3, x4), d = _mm256_unpackhi_epi8(x3, x4);
    const __m256i wb = _mm256_set1_epi32(w.quad_w4[q]);
    c0 = _mm256_add_epi32(c0, DotAvx2(_mm256_unpacklo_epi16(a, c), wb));
    c1 = _mm256_add_epi32(c1, DotAvx2(_mm256_unpackhi_epi16(a, c), wb));
    c2 = _mm256_add_epi32(c2, DotAvx2(_mm256_unpacklo_epi16(b, d), wb));
    c3 = _mm256_add_epi32(c3, DotAvx2(_mm256_unpackhi_epi16(b, d), wb));
  }
  __m256i* o = reinterpret_cast<__m256i*>(acc);
  _mm256_store_si256(o + 0, c0), _mm256_store_si256(o + 1, c1);
  _mm256_store_si256(o + 2, c2), _mm256_store_si256(o + 3, c3);
}

// BlocksToQuad512 for 32-token AVX2 tiles: [32][4] -> [4 k][32 bytes] per block column, token
// 8j + 4l + i at byte 16l + 4j + i.
TGT_AVX2 void BlocksToQuadAvx2(int64_t kb, uint8_t* tile) {
  const __m256i ctrl = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int64_t b = 0; b < kb; ++b) {
    __m256i* p = reinterpret_cast<__m256i*>(tile + b * 128);
    __m256i z[4];
    for (int j = 0; j < 4; ++j) z[j] = _mm256_shuffle_epi8(_mm256_load_si256(p + j), ctrl);
    const __m256i t0 = _mm256_unpacklo_epi32(z[0], z[1]), t1 = _mm256_unpackhi_epi32(z[0], z[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(z[2], z[3]), t3 = _mm256_unpackhi_epi32(z[2], z[3]);
    _mm256_store_si256(p + 0, _mm256_unpacklo_epi64(t0, t2));
    _mm256_store_si256(p + 1, _mm256_unpackhi_epi64(t0, t2));
    _mm256_store_si256(p + 2, _mm256_unpacklo_epi64(t1, t3));
    _mm256_store_si256(p + 3, _mm256_unpackhi_epi64(t1, t3));
  }
}

// 16x16 int32 transpose in registers: r[j][t] -> r[t][j].
TGT_512 inline void Transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int g = 0; g < 4; ++g) {
    const __m512i* q = r + 4 * g;
    t[4 * g + 0] = _mm512_unpacklo_epi32(q[0], q[1]);
    t[4 * g + 1] = _mm512_unpackhi_epi32(q[0], q[1]);
    t[4 * g + 2] = _mm512_unpacklo_epi32(q[2], q[3]);
    t[4 * g + 3] = _mm512_unpackhi_epi32(q[2], q[3]);
    u[4 * g + 0] = _mm512_unpacklo_epi64(t[4 * g + 0], t[4 * g + 2]);  // column 4l + 0
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g + 0], t[4 * g + 2]);  // column 4l + 1
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);  // column 4l + 2
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);  // column 4l + 3
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44);
    const __m512i v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
    const __m512i v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
    r[0 + c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

// erf in float32, |error| <= 1e-7: |x| in [0, 4) cut into 16 intervals of width 1/4, on each a
// degree-5 polynomial in the position u in [0, 1) within the interval, its six coefficients
// picked per lane by vpermps (erf is 1 in float32 from 3.92 on). Fitted to scipy's erf in
// double at Chebyshev nodes; checked in float32 arithmetic on 6M points in [-8, 8]. One
// polynomial per lane instead of two blended ones: about half the vector operations.
alignas(64) const float kErfTable[6][16] = {
    {2.5007578e-09f, 2.763264e-01f, 5.204999e-01f, 7.1115565e-01f,
     8.427008e-01f, 9.2290014e-01f, 9.6610516e-01f, 9.866717e-01f,
     9.953223e-01f, 9.985373e-01f, 9.99593e-01f, 9.998994e-01f,
     9.999779e-01f, 9.999957e-01f, 9.999993e-01f, 9.999999e-01f},  // u^0
    {2.8209463e-01f, 2.6500311e-01f, 2.1969528e-01f, 1.6073267e-01f,
     1.03777e-01f, 5.913047e-02f, 2.97327e-02f, 1.3193788e-02f,
     5.1667327e-03f, 1.7855532e-03f, 5.445513e-04f, 1.4655909e-04f,
     3.480915e-05f, 7.2959065e-06f, 1.3494874e-06f, 2.2027271e-07f},  // u^1
    {1.9670172e-06f, -1.6557816e-02f, -2.7457684e-02f, -3.0136133e-02f,
     -2.5945636e-02f, -1.848043e-02f, -1.1151227e-02f, -5.7727396e-03f,
     -2.5832187e-03f, -1.0040781e-03f, -3.401242e-04f, -1.00645484e-04f,
     -2.6061041e-05f, -5.912914e-06f, -1.1767042e-06f, -2.0556074e-07f},  // u^2
    {-5.884862e-03f, -4.8515582e-03f, -2.3069666e-03f, 4.1281164e-04f,
     2.1678442e-03f, 2.6272093e-03f, 2.1745733e-03f, 1.4108387e-03f,
     7.5287e-04f, 3.3812222e-04f, 1.2946392e-04f, 4.2603853e-05f,
     1.2115077e-05f, 2.9884463e-06f, 6.412593e-07f, 1.1995668e-07f},  // u^3
    {1.3567695e-05f, 5.354881e-04f, 7.5152575e-04f, 6.0096104e-04f,
     2.597583e-04f, -4.2306943e-05f, -1.872724e-04f, -1.9235574e-04f,
     -1.3351781e-04f, -7.1997296e-05f, -3.1698037e-05f, -1.1673263e-05f,
     -3.6460403e-06f, -9.744347e-07f, -2.2418318e-07f, -4.459158e-08f},  // u^4
    {1.01101556e-04f, 4.426382e-05f, -2.6401414e-05f, -6.514569e-05f,
     -5.9630074e-05f, -2.9925699e-05f, -2.2492695e-06f, 1.10625215e-05f,
     1.2152551e-05f, 8.164628e-06f, 4.137123e-06f, 1.6872142e-06f,
     5.705683e-07f, 1.6267553e-07f, 3.9511296e-08f, 8.2328e-09f},  // u^5
};

TGT_512 inline __m512 Erf512(__m512 x) {
  const __m512 v = _mm512_min_ps(_mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(4.f)),
                                 _mm512_set1_ps(15.999999f));
  const __m512 f = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512i i = _mm512_cvttps_epi32(f);
  const __m512 u = _mm512_sub_ps(v, f);
  __m512 p = _mm512_permutexvar_ps(i, _mm512_load_ps(kErfTable[5]));
  for (int d = 4; d >= 0; --d) {
    p = _mm512_fmadd_ps(p, u, _mm512_permutexvar_ps(i, _mm512_load_ps(kErfTable[d])));
  }
  p = _mm512_min_ps(p, _mm512_set1_ps(1.f));
  return _mm512_or_ps(p, _mm512_and_ps(x, _mm512_set1_ps(-0.f)));  // sign of x
}

// 0.5 * y * (1 + erf(y / sqrt(2))), with y * (1 / sqrt(2)) for the division (one ulp of the
// argument, within the erf bound) and one FMA for the outer product.
TGT_512 inline __m512 Gelu512(__m512 y) {
  const __m512 e = Erf512(_mm512_mul_ps(y, _mm512_set1_ps(0.70710678118654752f)));
  const __m512 h = _mm512_mul_ps(_mm512_set1_ps(0.5f), y);
  return _mm512_fmadd_ps(h, e, h);
}

template <int G>
TGT_512 void RowAvx512bwExact(const Packed& w, int64_t n, const uint8_t* ap, int32_t* acc) {
  if (w.quad) {
    RowQuad512bw<G>(w, n, ap, acc);
  } else if (w.narrow) {
    RowAvx512bw<G>(w, n, ap, acc);
  } else {
    RowScalar(w, n, ap, kT512, acc);
  }
}

}  // namespace

TGT_512 void Epilogue512(const Packed& w, const int32_t* tmp, int64_t mv, int64_t ng, int64_t nv,
                         int32_t a_zp, const Epilogue& ep, void* out) {
  const int64_t ld = ep.out_cols;
  const __mmask16 mask = nv >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << nv) - 1);
  const __m512i corr =
      _mm512_mullo_epi32(_mm512_set1_epi32(a_zp), _mm512_loadu_si512(w.wsum.data() + ng));
  __m512 scale = _mm512_setzero_ps(), bias = scale;
  if (ep.kind != kOutI32) {
    scale = _mm512_maskz_loadu_ps(mask, ep.scale + ng);
    bias = _mm512_maskz_loadu_ps(mask, ep.bias + ng);
  }
  const __m512 ys = _mm512_set1_ps(ep.y_scale), yzp = _mm512_set1_ps(float(ep.y_zp));
  const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.f);
  for (int64_t mb = 0; mb * 16 < mv; ++mb) {
    __m512i r[16];
    for (int j = 0; j < 16; ++j) r[j] = _mm512_load_si512(tmp + j * kT512 + mb * 16);
    Transpose16(r);
    const int64_t tv = std::min<int64_t>(16, mv - mb * 16);
    for (int64_t t = 0; t < tv; ++t) {
      const int64_t at = (mb * 16 + t) * ld + ng - ep.first_col;
      const __m512i v = _mm512_sub_epi32(r[t], corr);
      if (ep.kind == kOutI32) {
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(out) + at, mask, v);
        continue;
      }
      __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), scale), bias);
      if (ep.gelu) y = Gelu512(y);
      if (ep.kind == kOutF32) {
        _mm512_mask_storeu_ps(static_cast<float*>(out) + at, mask, y);
        continue;
      }
      __m512 q = _mm512_roundscale_ps(_mm512_div_ps(y, ys),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, yzp), lo), hi);
      const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q));
      _mm_mask_storeu_epi8(static_cast<uint8_t*>(out) + at, mask, bytes);
    }
  }
}

// Output rows [n0, n1) of one tile, kRowGroup rows at a time through the epilogue; the row
// kernel computes only the 16-token groups that hold the tile's `mv` tokens.
#define ST_TILE512_ROWS(ROW)                                                              \
  for (int64_t ng = n0; ng < n1; ng += kRowGroup) {                                       \
    const int64_t nv = std::min<int64_t>(kRowGroup, n1 - ng);                             \
    for (int64_t j = 0; j < kRowGroup; ++j) {                                             \
      if (j < nv) {                                                                       \
        ROW(w, ng + j, ap, tmp + j * kT512);                                              \
      } else {                                                                            \
        std::memset(tmp + j * kT512, 0, kT512 * sizeof(int32_t));                         \
      }                                                                                   \
    }                                                                                     \
    Epilogue512(w, tmp, mv, ng, nv, a_zp, ep, out);                                       \
  }

#define ST_DEFINE_TILE512(NAME, TGT, ROW)                                                 \
  TGT void NAME(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,   \
                int32_t a_zp, const Epilogue& ep, void* out) {                            \
    alignas(64) int32_t tmp[kRowGroup * kT512];                                           \
    switch ((mv + 15) / 16) {                                                             \
      case 1: ST_TILE512_ROWS(ROW<1>) break;                                              \
      case 2: ST_TILE512_ROWS(ROW<2>) break;                                              \
      case 3: ST_TILE512_ROWS(ROW<3>) break;                                              \
      default: ST_TILE512_ROWS(ROW<4>) break;                                             \
    }                                                                                     \
  }

ST_DEFINE_TILE512(TileAvx512vnni, TGT_VNNI, RowAvx512vnni)
ST_DEFINE_TILE512(TileAvx512bw, TGT_512, RowAvx512bwExact)
ST_DEFINE_TILE512(TileQuadVnni, TGT_VNNI, RowQuadVnni)

// The AVX2 epilogue: arithmetic over 8 tokens of one output row at a time (scale, bias and
// the erf below), then a scalar transposing store.
//
// erf in float32 for AVX2, |error| <= 1.1e-7: as Erf512's table, with 8 intervals of width 1/2
// (one vpermps reaches 8 entries) and degree 6; fitted and checked the same way.
alignas(32) const float kErfTable8[7][8] = {
    {-1.6151924e-08f, 5.204999e-01f, 8.427008e-01f, 9.6610516e-01f,
     9.953223e-01f, 9.99593e-01f, 9.999779e-01f, 9.999993e-01f},  // u^0
    {5.641912e-01f, 4.3938968e-01f, 2.0755331e-01f, 5.9465706e-02f,
     1.0333576e-02f, 1.0890816e-03f, 6.960899e-05f, 2.697919e-06f},  // u^1
    {-2.6462149e-05f, -1.0982207e-01f, -1.03769444e-01f, -4.460788e-02f,
     -1.0334914e-02f, -1.3604566e-03f, -1.0415228e-04f, -4.6947284e-06f},  // u^2
    {-4.6851836e-02f, -1.8459914e-02f, 1.7247844e-02f, 1.7398274e-02f,
     6.037133e-03f, 1.0379084e-03f, 9.68529e-05f, 5.0989756e-06f},  // u^3
    {-4.8950926e-04f, 1.1864394e-02f, 4.478094e-03f, -2.9427218e-03f,
     -2.182533e-03f, -5.221008e-04f, -5.9911745e-05f, -3.6525705e-06f},  // u^4
    {4.291218e-03f, -3.558318e-04f, -2.427298e-03f, -2.3764692e-04f,
     4.609528e-04f, 1.664878e-04f, 2.3226676e-05f, 1.6013715e-06f},  // u^5
    {-6.146999e-04f, -4.153567e-04f, 3.2183965e-04f, 1.4139836e-04f,
     -4.3430704e-05f, -2.6060165e-05f, -4.2774755e-06f, -3.2331903e-07f},  // u^6
};

TGT_AVX2 inline __m256 Erf256(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256 v = _mm256_min_ps(_mm256_mul_ps(_mm256_andnot_ps(sign, x), _mm256_set1_ps(2.f)),
                                 _mm256_set1_ps(7.9999995f));
  const __m256 f = _mm256_floor_ps(v);
  const __m256i i = _mm256_cvttps_epi32(f);
  const __m256 u = _mm256_sub_ps(v, f);
  __m256 p = _mm256_permutevar8x32_ps(_mm256_load_ps(kErfTable8[6]), i);
  for (int d = 5; d >= 0; --d) {
    p = _mm256_fmadd_ps(p, u, _mm256_permutevar8x32_ps(_mm256_load_ps(kErfTable8[d]), i));
  }
  p = _mm256_min_ps(p, _mm256_set1_ps(1.f));
  return _mm256_or_ps(p, _mm256_and_ps(x, sign));
}

TGT_AVX2 void EpilogueAvx2(const Packed& w, int32_t* tmp, int64_t mv, int64_t ng, int64_t nv,
                           int32_t a_zp, const Epilogue& ep, void* out) {
  constexpr int kT = 32;
  const int64_t ld = ep.out_cols, first = ng - ep.first_col;
  for (int64_t j = 0; j < nv; ++j) {
    const int64_t n = ng + j;
    const __m256i corr = _mm256_set1_epi32(a_zp * w.wsum[n]);
    const __m256 scale = _mm256_set1_ps(ep.kind == kOutI32 ? 0.f : ep.scale[n]);
    const __m256 bias = _mm256_set1_ps(ep.kind == kOutI32 ? 0.f : ep.bias[n]);
    for (int64_t mb = 0; mb * 8 < mv; ++mb) {
      int32_t* p = tmp + j * kT + mb * 8;
      const __m256i v = _mm256_sub_epi32(_mm256_load_si256(reinterpret_cast<__m256i*>(p)), corr);
      if (ep.kind == kOutI32) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(p), v);
        continue;
      }
      __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), scale), bias);
      if (ep.gelu) {  // as Gelu512
        const __m256 e = Erf256(_mm256_mul_ps(y, _mm256_set1_ps(0.70710678118654752f)));
        const __m256 h = _mm256_mul_ps(_mm256_set1_ps(0.5f), y);
        y = _mm256_fmadd_ps(h, e, h);
      }
      if (ep.kind == kOutU8) {
        __m256 q = _mm256_round_ps(_mm256_div_ps(y, _mm256_set1_ps(ep.y_scale)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm256_add_ps(q, _mm256_set1_ps(float(ep.y_zp)));
        q = _mm256_min_ps(_mm256_max_ps(q, _mm256_setzero_ps()), _mm256_set1_ps(255.f));
        _mm256_store_si256(reinterpret_cast<__m256i*>(p), _mm256_cvttps_epi32(q));
      } else {
        _mm256_store_ps(reinterpret_cast<float*>(p), y);
      }
    }
  }
  for (int64_t m = 0; m < mv; ++m) {  // transposing store: tmp[j][m] -> out[m][ng + j]
    for (int64_t j = 0; j < nv; ++j) {
      const int32_t bits = tmp[j * kT + m];
      if (ep.kind == kOutU8) {
        static_cast<uint8_t*>(out)[m * ld + first + j] = static_cast<uint8_t>(bits);
      } else {
        std::memcpy(static_cast<char*>(out) + (m * ld + first + j) * 4, &bits, 4);
      }
    }
  }
}

TGT_SSE41 void TileSse41(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
                         int32_t a_zp, const Epilogue& ep, void* out) {
  alignas(64) int32_t tmp[kRowGroup * 16];
  for (int64_t ng = n0; ng < n1; ng += kRowGroup) {
    const int64_t nv = std::min<int64_t>(kRowGroup, n1 - ng);
    for (int64_t j = 0; j < nv; ++j) {
      if (w.narrow) {
        RowSse41(w, ng + j, ap, tmp + j * 16);
      } else {
        RowScalar(w, ng + j, ap, 16, tmp + j * 16);
      }
    }
    EpilogueScalar(w, tmp, 16, mv, ng, nv, a_zp, ep, out);
  }
}

TGT_AVX2 void TileAvx2(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
                       int32_t a_zp, const Epilogue& ep, void* out) {
  alignas(64) int32_t tmp[kRowGroup * 32];
  for (int64_t ng = n0; ng < n1; ng += kRowGroup) {
    const int64_t nv = std::min<int64_t>(kRowGroup, n1 - ng);
    for (int64_t j = 0; j < nv; ++j) {
      if (w.quad) {
        RowQuadAvx2(w, ng + j, ap, tmp + j * 32);
      } else if (w.narrow) {
        RowAvx2(w, ng + j, ap, tmp + j * 32);
      } else {
        RowScalar(w, ng + j, ap, 32, tmp + j * 32);
      }
    }
    EpilogueAvx2(w, tmp, mv, ng, nv, a_zp, ep, out);
  }
}

// Quantizes 16 floats (x / scale, half to even, + zp, saturated) to 16 bytes.
TGT_512 inline __m128i Quantize16(__m512 x, __m512 scale, __m512 zp) {
  __m512 q = _mm512_roundscale_ps(_mm512_div_ps(x, scale),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, zp), _mm512_setzero_ps()),
                    _mm512_set1_ps(255.f));
  return _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(q));
}

// Repacks tokens [t0, t0 + tile) of u8 A[m, k] (or float X, quantized on the way) into
// [kb][tile][4]: 16 tokens x 16 blocks (64 bytes of each row) at a time, transposed as
// 16 x 16 dwords in registers, so every store is a full aligned 64-byte line.
template <bool kFloat>
TGT_512 void RepackAvx512(const void* src, int64_t m, int64_t k, float scale, int32_t zp,
                          int tile, int64_t t0, uint8_t* dst) {
  const int64_t kb = (k + 3) / 4;
  const __m512 sc = _mm512_set1_ps(scale), zpf = _mm512_set1_ps(float(zp));
  for (int64_t tg = 0; tg < tile; tg += 16) {
    const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(16, m - t0 - tg));
    if (valid == 0) {  // past the last token: zeros, no transpose
      for (int64_t b = 0; b < kb; ++b) {
        _mm512_store_si512(dst + (b * tile + tg) * 4, _mm512_setzero_si512());
      }
      continue;
    }
    for (int64_t g = 0; g < kb; g += 16) {
      const int64_t bytes = std::min<int64_t>(64, k - 4 * g);
      __m512i r[16];
      for (int64_t i = 0; i < 16; ++i) {
        if (i >= valid) {
          r[i] = _mm512_setzero_si512();
        } else if (!kFloat) {
          const __mmask64 mask = bytes >= 64 ? ~0ull : (1ull << bytes) - 1;
          const uint8_t* row = static_cast<const uint8_t*>(src) + (t0 + tg + i) * k + 4 * g;
          r[i] = _mm512_maskz_loadu_epi8(mask, row);
        } else {
          const float* row = static_cast<const float*>(src) + (t0 + tg + i) * k + 4 * g;
          __m512i v = _mm512_setzero_si512();
          for (int q = 0; q < 4; ++q) {  // always 4 rotations (past K: padding, weight 0)
            const int64_t left = std::max<int64_t>(0, bytes - 16 * q);
            const __mmask16 mask = left >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << left) - 1);
            const __m128i b = Quantize16(_mm512_maskz_loadu_ps(mask, row + 16 * q), sc, zpf);
            v = _mm512_inserti32x4(v, b, 0);
            v = _mm512_alignr_epi32(v, v, 4);  // rotate: the quarter just written moves last
          }
          r[i] = v;
        }
      }
      Transpose16(r);
      for (int64_t j = 0; j < 16 && g + j < kb; ++j) {
        _mm512_store_si512(dst + ((g + j) * tile + tg) * 4, r[j]);
      }
    }
  }
}

// AVX2 repack: 8 tokens x 8 blocks (32 bytes of each row) per step, an 8 x 8 dword transpose
// in registers, full 32-byte stores. Row tails go through a zeroed 32-byte buffer (AVX2 has no
// byte-masked loads); float rows are quantized 8 at a time into that buffer.
TGT_AVX2 inline void Transpose8(__m256i r[8]) {
  __m256i u[8];
  for (int g = 0; g < 2; ++g) {
    const __m256i* q = r + 4 * g;
    const __m256i t0 = _mm256_unpacklo_epi32(q[0], q[1]), t1 = _mm256_unpackhi_epi32(q[0], q[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(q[2], q[3]), t3 = _mm256_unpackhi_epi32(q[2], q[3]);
    u[4 * g + 0] = _mm256_unpacklo_epi64(t0, t2), u[4 * g + 1] = _mm256_unpackhi_epi64(t0, t2);
    u[4 * g + 2] = _mm256_unpacklo_epi64(t1, t3), u[4 * g + 3] = _mm256_unpackhi_epi64(t1, t3);
  }
  for (int c = 0; c < 4; ++c) {
    r[c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);
    r[4 + c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31);
  }
}

template <bool kFloat>
TGT_AVX2 void RepackAvx2(const void* src, int64_t m, int64_t k, float scale, int32_t zp,
                         int tile, int64_t t0, uint8_t* dst) {
  const int64_t kb = (k + 3) / 4;
  const __m256 sc = _mm256_set1_ps(scale), zpf = _mm256_set1_ps(float(zp));
  const __m256i pick = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
  for (int64_t tg = 0; tg < tile; tg += 8) {
    const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(8, m - t0 - tg));
    for (int64_t g = 0; g < kb; g += 8) {
      const int64_t width = std::min<int64_t>(32, k - 4 * g);
      __m256i r[8];
      for (int64_t i = 0; i < 8; ++i) {
        alignas(32) uint8_t buf[32] = {0};
        if (i < valid && !kFloat) {
          const uint8_t* row = static_cast<const uint8_t*>(src) + (t0 + tg + i) * k + 4 * g;
          if (width == 32) {
            r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row));
            continue;
          }
          std::memcpy(buf, row, width);
        } else if (i < valid) {
          const float* row = static_cast<const float*>(src) + (t0 + tg + i) * k + 4 * g;
          for (int64_t e = 0; e < width; e += 8) {
            alignas(32) float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            std::memcpy(part, row + e, std::min<int64_t>(8, width - e) * sizeof(float));
            __m256 q = _mm256_round_ps(_mm256_div_ps(_mm256_load_ps(part), sc),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, zpf), _mm256_setzero_ps()),
                              _mm256_set1_ps(255.f));
            const __m256i w16 = _mm256_packs_epi32(_mm256_cvttps_epi32(q), _mm256_setzero_si256());
            const __m256i b8 = _mm256_packus_epi16(w16, _mm256_setzero_si256());
            const __m256i lo = _mm256_permutevar8x32_epi32(b8, pick);
            _mm_storel_epi64(reinterpret_cast<__m128i*>(buf + e), _mm256_castsi256_si128(lo));
          }
        }
        r[i] = _mm256_load_si256(reinterpret_cast<const __m256i*>(buf));
      }
      Transpose8(r);
      for (int64_t j = 0; j < 8 && g + j < kb; ++j) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + ((g + j) * tile + tg) * 4), r[j]);
      }
    }
  }
}

void BlocksToQuadLayout(Isa isa, int64_t kb, uint8_t* tile) {
  if (isa >= kAvx512bw) BlocksToQuad512(kb, tile);
  if (isa == kAvx2) BlocksToQuadAvx2(kb, tile);
}

void RunTile(Isa isa, const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
             int32_t a_zp, const Epilogue& ep, void* out) {
  switch (isa) {
    case kAmx:
      if (w.amx) return TileAmx(w, ap, mv, n0, n1, a_zp, ep, out);
      [[fallthrough]];
    case kAvx512vnni:
      if (w.quad) return TileQuadVnni(w, ap, mv, n0, n1, a_zp, ep, out);
      return TileAvx512vnni(w, ap, mv, n0, n1, a_zp, ep, out);
    case kAvx512bw: return TileAvx512bw(w, ap, mv, n0, n1, a_zp, ep, out);
    case kAvx2: return TileAvx2(w, ap, mv, n0, n1, a_zp, ep, out);
    case kSse41: return TileSse41(w, ap, mv, n0, n1, a_zp, ep, out);
    default: return TileScalar(w, ap, 16, mv, n0, n1, a_zp, ep, out);
  }
}

void RepackU8(Isa isa, const uint8_t* a, int64_t m, int64_t k, int64_t tile, uint8_t* dst) {
  const int t = TileTokens(isa);
  if (isa >= kAvx512bw) return RepackAvx512<false>(a, m, k, 0.f, 0, t, tile * t, dst);
  if (isa == kAvx2) return RepackAvx2<false>(a, m, k, 0.f, 0, t, tile * t, dst);
  RepackU8Scalar(a, m, k, t, tile * t, dst);
}

void RepackF32(Isa isa, const float* x, int64_t m, int64_t k, float scale, int32_t zp,
               int64_t tile, uint8_t* dst) {
  const int t = TileTokens(isa);
  if (isa >= kAvx512bw) return RepackAvx512<true>(x, m, k, scale, zp, t, tile * t, dst);
  if (isa == kAvx2) return RepackAvx2<true>(x, m, k, scale, zp, t, tile * t, dst);
  RepackF32Scalar(x, m, k, scale, zp, t, tile * t, dst);
}

}  // namespace st
