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
        reinterpret_cast<const __m256i*>(ap + static_cast<size_t>(w.col[b]) * kTAvx2 * 4);
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

// GELU's erf term in float32: P(v) = erf(x) / 2 for v = 8|x| clamped to [0, 31.49] (erf / 2 is
// 0.5 in float32 from x = 3.87 on), |P - erf(x) / 2| <= 5.3e-8. v cut into 32 intervals
// centred on its integers; on each a degree-4 polynomial in u = v - round(v), |u| <= 1/2, its
// five coefficients picked per lane from two registers by vpermt2ps. Fitted to scipy's erf in
// double at Chebyshev nodes; checked in float32 arithmetic on 6M points in [-12, 12]. The
// epilogue waited on the older form's chain (its scheduler filled before the ports did), hence
// round(v) by the 1.5 * 2^23 trick (vpermt2ps reads the index from the sum's low five bits)
// and Estrin's scheme.
alignas(64) const float kHalfErfTable[5][32] = {
    {4.83132249e-18f, 0.0701581016f, 0.138163194f, 0.202058449f, 0.260249943f, 0.311620444f,
     0.355577826f, 0.392037541f, 0.42135039f, 0.444194108f, 0.46145007f, 0.474085033f,
     0.483052582f, 0.489221871f, 0.493335843f, 0.495995015f, 0.497661144f, 0.498672992f,
     0.499268651f, 0.499608517f, 0.49979651f, 0.499897301f, 0.499949694f, 0.499976069f,
     0.499988943f, 0.499995053f, 0.499997854f, 0.499999106f, 0.499999642f, 0.499999851f,
     0.49999994f, 0.49999997f},  // u^0
    {0.0705236644f, 0.0694302991f, 0.0662508607f, 0.0612720363f, 0.0549239106f, 0.0477187298f,
     0.0401832089f, 0.0327965841f, 0.0259442385f, 0.0198921412f, 0.0147825843f, 0.0106474953f,
     0.00743314764f, 0.00502951676f, 0.00329843536f, 0.00209661084f, 0.00129168271f,
     0.000771297549f, 0.000446391758f, 0.000250402372f, 0.000136140938f, 7.17409348e-05f,
     3.66415043e-05f, 1.81387568e-05f, 8.7030121e-06f, 4.04724551e-06f, 1.82422025e-06f,
     7.96934842e-07f, 3.37439616e-07f, 1.38483173e-07f, 5.5084012e-08f, 2.12365361e-08f},  // u^1
    {1.00345094e-18f, -0.00108484738f, -0.0020703373f, -0.00287212408f, -0.00343274116f,
     -0.00372802233f, -0.00376717234f, -0.00358712371f, -0.00324302772f, -0.00279733073f,
     -0.00230977801f, -0.00183003815f, -0.00139371562f, -0.0010216214f, -0.000721533725f,
     -0.000491394254f, -0.000322921667f, -0.000204876778f, -0.00012554838f, -7.43387354e-05f,
     -4.25444268e-05f, -2.35402567e-05f, -1.25956894e-05f, -6.51872278e-06f, -3.26369377e-06f,
     -1.58099215e-06f, -7.41109886e-07f, -3.3621771e-07f, -1.47635348e-07f, -6.27528962e-08f,
     -2.58219117e-08f, -1.02864268e-08f},  // u^2
    {-0.000366773398f, -0.000349819486f, -0.000301543187f, -0.000229154553f, -0.000142995996f,
     -5.44974791e-05f, 2.59074113e-05f, 9.04255576e-05f, 0.00013479653f, 0.000158352632f,
     0.000163384262f, 0.00015409007f, 0.000135429029f, 0.000112138739f, 8.80756925e-05f,
     6.59150028e-05f, 4.71550884e-05f, 3.23226377e-05f, 2.12661907e-05f, 1.34485781e-05f,
     8.18356511e-06f, 4.79593245e-06f, 2.70884539e-06f, 1.47550008e-06f, 7.7546099e-07f,
     3.93400711e-07f, 1.92720051e-07f, 9.11959717e-08f, 4.16969108e-08f, 1.84254869e-08f,
     7.87074672e-09f, 3.24993055e-09f},  // u^3
    {-7.98426226e-17f, 8.37090556e-06f, 1.54716327e-05f, 2.02990832e-05f, 2.23128372e-05f,
     2.15109594e-05f, 1.83751927e-05f, 1.37128618e-05f, 8.44866736e-06f, 3.42580233e-06f,
     -7.36663083e-07f, -3.70738189e-06f, -5.43038095e-06f, -6.05888863e-06f, -5.86543865e-06f,
     -5.15573583e-06f, -4.20437527e-06f, -3.21917287e-06f, -2.3315888e-06f, -1.60540094e-06f,
     -1.05453682e-06f, -6.62531477e-07f, -3.9890466e-07f, -2.30522929e-07f, -1.280183e-07f,
     -6.83871093e-08f, -3.51703662e-08f, -1.74252168e-08f, -8.32205149e-09f, -3.83309828e-09f,
     -1.70342573e-09f, -7.33691996e-10f},  // u^4
};

TGT_512 inline __m512 HalfErfCoef(__m512i i, int d) {
  return _mm512_permutex2var_ps(_mm512_load_ps(kHalfErfTable[d]), i,
                                _mm512_load_ps(kHalfErfTable[d] + 16));
}

TGT_512 inline __m512 HalfErf512(__m512 v) {
  const __m512 magic = _mm512_set1_ps(12582912.f);  // 1.5 * 2^23: v + magic rounds v
  const __m512 t = _mm512_add_ps(v, magic);
  const __m512i i = _mm512_castps_si512(t);
  const __m512 u = _mm512_sub_ps(v, _mm512_sub_ps(t, magic));
  const __m512 u2 = _mm512_mul_ps(u, u);
  const __m512 hi = _mm512_fmadd_ps(HalfErfCoef(i, 4), u2,
                                    _mm512_fmadd_ps(HalfErfCoef(i, 3), u, HalfErfCoef(i, 2)));
  return _mm512_fmadd_ps(hi, u2, _mm512_fmadd_ps(HalfErfCoef(i, 1), u, HalfErfCoef(i, 0)));
}

// 0.5 * y * (1 + erf(y / sqrt(2))) = 0.5 * y + |y| * erf(|y| / sqrt(2)) / 2, with
// |y| * (8 / sqrt(2)) for v (one ulp of the argument, within the bound).
TGT_512 inline __m512 Gelu512(__m512 y) {
  const __m512 a = _mm512_abs_ps(y);
  const __m512 v = _mm512_min_ps(_mm512_mul_ps(a, _mm512_set1_ps(5.65685424949238f)),
                                 _mm512_set1_ps(31.49f));
  return _mm512_fmadd_ps(a, HalfErf512(v), _mm512_mul_ps(_mm512_set1_ps(0.5f), y));
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
  EpilogueGroups512(w, tmp, mv, ng, nv, a_zp, ep, out, 0, (mv + 15) / 16);
}

TGT_512 void EpilogueGroups512(const Packed& w, const int32_t* tmp, int64_t mv, int64_t ng,
                               int64_t nv, int32_t a_zp, const Epilogue& ep, void* out,
                               int64_t mb0, int64_t mb1) {
  const int64_t ld = ep.out_cols;
  const __mmask16 mask = nv >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << nv) - 1);
  const __m512i corr =
      _mm512_mullo_epi32(_mm512_set1_epi32(a_zp), _mm512_loadu_si512(w.wsum.data() + ng));
  __m512 scale = _mm512_setzero_ps(), bias = scale;
  if (ep.kind != kOutI32) {
    scale = _mm512_maskz_loadu_ps(mask, ep.scale + ng);
    bias = _mm512_maskz_loadu_ps(mask, ep.bias + ng);
  }
  const __m512 ys = _mm512_set1_ps(ep.y_scale), cap = _mm512_set1_ps(kQuotientCap);
  const __m512i yzp = _mm512_set1_epi32(ep.y_zp), zero = _mm512_setzero_si512();
  for (int64_t mb = mb0; mb < mb1; ++mb) {
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
      // round(y / y_scale) half to even (vcvtps2dq; kQuotientCap keeps it inside int32, a NaN
      // stays NaN and converts to INT32_MIN), + zp, then 0 and 255 as saturations: the short
      // chain (below -kQuotientCap the conversion's INT32_MIN saturates to 0 all the same).
      const __m512i q = _mm512_add_epi32(
          _mm512_cvt_roundps_epi32(_mm512_min_ps(cap, _mm512_div_ps(y, ys)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), yzp);
      _mm512_mask_cvtusepi32_storeu_epi8(static_cast<uint8_t*>(out) + at, mask,
                                         _mm512_max_epi32(q, zero));
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
// the erf below), then a transposing store (StoreGroupAvx2; scalar for fewer than 16 rows).
//
// GELU's erf term for AVX2, as HalfErf512 with 8 intervals (one vpermps reaches 8 entries) of
// v = 2|x| centred on v's integers, v clamped to [0, 7.49], degree 6 by Estrin's
// scheme: |P - erf(x) / 2| <= 7.2e-8; fitted and checked the same way.
alignas(32) const float kHalfErfTable8[7][8] = {
    {3.00287345e-18f, 0.260249943f, 0.42135039f, 0.483052582f,
     0.497661144f, 0.49979651f, 0.499988943f, 0.499999642f},  // u^0
    {0.282094628f, 0.219695672f, 0.103776976f, 0.0297325421f,
     0.00516672386f, 0.000544574461f, 3.48158792e-05f, 1.35023481e-06f},  // u^1
    {-2.66222058e-16f, -0.0549238361f, -0.0518884733f, -0.022299448f,
     -0.00516673457f, -0.000680711761f, -5.22209084e-05f, -2.36268738e-06f},  // u^2
    {-0.0235022772f, -0.0091550909f, 0.00864487886f, 0.008672975f,
     0.00301465811f, 0.000521770446f, 4.92350555e-05f, 2.63118113e-06f},  // u^3
    {3.21721875e-15f, 0.00571973529f, 0.00216272543f, -0.00139335229f,
     -0.00107664359f, -0.000269490381f, -3.26171539e-05f, -2.10852841e-06f},  // u^4
    {0.0017178877f, 0.00012336942f, -0.00105536799f, -0.000240159206f,
     0.0001987367f, 9.64762148e-05f, 1.65528363e-05f, 1.38260793e-06f},  // u^5
    {-7.42841203e-15f, -0.000381272781f, 3.14725185e-05f, 0.000148670952f,
     5.11923781e-06f, -2.16019725e-05f, -5.89620504e-06f, -6.48882633e-07f},  // u^6
};

TGT_AVX2 inline __m256 HalfErfCoef8(__m256i i, int d) {
  return _mm256_permutevar8x32_ps(_mm256_load_ps(kHalfErfTable8[d]), i);
}

// 0.5 * y + |y| * P(|y| * (2 / sqrt(2))), as Gelu512.
TGT_AVX2 inline __m256 Gelu256(__m256 y) {
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.f), y);
  const __m256 v = _mm256_min_ps(_mm256_mul_ps(a, _mm256_set1_ps(1.41421356237310f)),
                                 _mm256_set1_ps(7.49f));
  const __m256 magic = _mm256_set1_ps(12582912.f);
  const __m256 t = _mm256_add_ps(v, magic);
  const __m256i i = _mm256_castps_si256(t);
  const __m256 u = _mm256_sub_ps(v, _mm256_sub_ps(t, magic));
  const __m256 u2 = _mm256_mul_ps(u, u), u4 = _mm256_mul_ps(u2, u2);
  const __m256 lo = _mm256_fmadd_ps(HalfErfCoef8(i, 1), u, HalfErfCoef8(i, 0));
  const __m256 mid = _mm256_fmadd_ps(HalfErfCoef8(i, 3), u, HalfErfCoef8(i, 2));
  const __m256 hi = _mm256_fmadd_ps(HalfErfCoef8(i, 6), u2,
                                    _mm256_fmadd_ps(HalfErfCoef8(i, 5), u, HalfErfCoef8(i, 4)));
  const __m256 p = _mm256_fmadd_ps(hi, u4, _mm256_fmadd_ps(mid, u2, lo));
  return _mm256_fmadd_ps(a, p, _mm256_mul_ps(_mm256_set1_ps(0.5f), y));
}

// 8 x 8 dwords in registers (the AVX2 repack and the epilogue's store).
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

// A whole group's transposing store, tmp[j][m] -> out[m][first + j] for 16 rows: 8 tokens at a
// time through two 8 x 8 dword transposes, then per token one 16-byte store of the rows' bytes
// (uint8 out: the values are already 0..255) or two 32-byte stores of their words.
TGT_AVX2 void StoreGroupAvx2(const int32_t* tmp, int64_t mv, int64_t ld, int64_t first, bool u8,
                             void* out) {
  for (int64_t m0 = 0; m0 < mv; m0 += 8) {
    __m256i lo[8], hi[8];
    for (int j = 0; j < 8; ++j) {
      lo[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp + j * kTAvx2 + m0));
      hi[j] = _mm256_load_si256(reinterpret_cast<const __m256i*>(tmp + (j + 8) * kTAvx2 + m0));
    }
    Transpose8(lo), Transpose8(hi);
    const int64_t tv = std::min<int64_t>(8, mv - m0);
    for (int64_t t = 0; t < tv; ++t) {
      const int64_t at = (m0 + t) * ld + first;
      if (u8) {
        const __m256i w16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo[t], hi[t]), 0xD8);
        const __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(w16),
                                           _mm256_extracti128_si256(w16, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint8_t*>(out) + at), b);
      } else {
        int32_t* o = static_cast<int32_t*>(out) + at;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), lo[t]);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8), hi[t]);
      }
    }
  }
}

TGT_AVX2 void EpilogueAvx2(const Packed& w, int32_t* tmp, int64_t mv, int64_t ng, int64_t nv,
                           int32_t a_zp, const Epilogue& ep, void* out) {
  const int64_t ld = ep.out_cols, first = ng - ep.first_col;
  for (int64_t j = 0; j < nv; ++j) {
    const int64_t n = ng + j;
    const __m256i corr = _mm256_set1_epi32(a_zp * w.wsum[n]);
    const __m256 scale = _mm256_set1_ps(ep.kind == kOutI32 ? 0.f : ep.scale[n]);
    const __m256 bias = _mm256_set1_ps(ep.kind == kOutI32 ? 0.f : ep.bias[n]);
    for (int64_t mb = 0; mb * 8 < mv; ++mb) {
      int32_t* p = tmp + j * kTAvx2 + mb * 8;
      const __m256i v = _mm256_sub_epi32(_mm256_load_si256(reinterpret_cast<__m256i*>(p)), corr);
      if (ep.kind == kOutI32) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(p), v);
        continue;
      }
      __m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), scale), bias);
      if (ep.gelu) y = Gelu256(y);
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
  if (nv == kRowGroup) return StoreGroupAvx2(tmp, mv, ld, first, ep.kind == kOutU8, out);
  for (int64_t m = 0; m < mv; ++m) {  // transposing store: tmp[j][m] -> out[m][ng + j]
    for (int64_t j = 0; j < nv; ++j) {
      const int32_t bits = tmp[j * kTAvx2 + m];
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
  alignas(64) int32_t tmp[kRowGroup * kTAvx2];
  for (int64_t ng = n0; ng < n1; ng += kRowGroup) {
    const int64_t nv = std::min<int64_t>(kRowGroup, n1 - ng);
    for (int64_t j = 0; j < nv; ++j) {
      if (w.quad) {
        RowQuadAvx2(w, ng + j, ap, tmp + j * kTAvx2);
      } else if (w.narrow) {
        RowAvx2(w, ng + j, ap, tmp + j * kTAvx2);
      } else {
        RowScalar(w, ng + j, ap, kTAvx2, tmp + j * kTAvx2);
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
