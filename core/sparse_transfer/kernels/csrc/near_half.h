// Quantizing by multiplication where the graph divides: x * (1 / d) (or x * (1 / d1) * (1 / d2))
// is within a few roundings of 2^-24 of the graph's division(s), at most |r| * 2^-21.2, so it
// rounds to the same integer (half to even) unless a half-integer lies that close to it. A vector
// with a lane within |r| * 2^-19 of one takes the division instead: same integers, and a vector
// division (about five vpdpbusd of throughput here) is paid only near ties. Valid only when the
// reciprocals are normal floats (`NormalReciprocal`), so no product leaves the relative bound
// where it could reach a half-integer; NaN and infinity follow the division (the check is false
// for NaN and the product is NaN or infinite alike).
#pragma once

#include <immintrin.h>

#include <cmath>

namespace st {

inline bool NormalReciprocal(float d) { return std::isnormal(d) && std::isnormal(1.f / d); }

__attribute__((target("avx512f"))) inline bool NearHalf512(__m512 r) {
  const __m512 nearest = _mm512_roundscale_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 off = _mm512_abs_ps(_mm512_sub_ps(r, nearest));
  const __m512 reach = _mm512_fmadd_ps(_mm512_abs_ps(r), _mm512_set1_ps(1.f / (1 << 19)), off);
  return _mm512_cmp_ps_mask(reach, _mm512_set1_ps(0.5f), _CMP_GE_OQ) != 0;
}

__attribute__((target("avx2,fma"))) inline bool NearHalf256(__m256 r) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256 nearest = _mm256_round_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 off = _mm256_andnot_ps(sign, _mm256_sub_ps(r, nearest));
  const __m256 reach =
      _mm256_fmadd_ps(_mm256_andnot_ps(sign, r), _mm256_set1_ps(1.f / (1 << 19)), off);
  return _mm256_movemask_ps(_mm256_cmp_ps(reach, _mm256_set1_ps(0.5f), _CMP_GE_OQ)) != 0;
}

}  // namespace st
