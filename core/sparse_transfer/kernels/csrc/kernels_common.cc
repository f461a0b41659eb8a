// Portable parts of the kernels: CPU dispatch, weight packing, the scalar path and the
// scalar epilogue that every non-AVX-512 path shares. Built without -march: every
// instruction-set specific function carries its own target attribute (kernels_x86.cc).
#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "kernels.h"
#include "kernels_internal.h"

namespace st {

const char* IsaName(Isa isa) {
  switch (isa) {
    case kAmx: return "amx";
    case kAvx512vnni: return "avx512vnni";
    case kAvx512bw: return "avx512bw";
    case kAvx2: return "avx2";
    case kSse41: return "sse41";
    default: return "scalar";
  }
}

// AMX tiles: the CPU has AMX-TILE and AMX-INT8 (CPUID.7.0:EDX bits 24, 25) and Linux lets this
// process use the tile data state (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), as
// ONNX Runtime's MLAS asks for it; kernels before 5.16 refuse, and so does
// tests/benchmarks/noamx.c, which then stands for a CPU without AMX).
bool AmxUsable() {
#if defined(__x86_64__) && defined(__linux__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  if (!((edx >> 24) & 1u) || !((edx >> 25) & 1u)) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

bool CpuHas(Isa isa) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  switch (isa) {
    case kAmx:
      return CpuHas(kAvx512vnni) && AmxUsable();
    case kAvx512vnni:
      return CpuHas(kAvx512bw) && __builtin_cpu_supports("avx512vnni");
    case kAvx512bw:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    case kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case kSse41:
      return __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("ssse3");
    default:
      return true;
  }
#else
  return isa == kScalar;
#endif
}

bool SelectIsa(Isa* isa, std::string* error) {
  Isa best = kScalar;
  for (int i = kAmx; i > kScalar; --i) {
    if (CpuHas(static_cast<Isa>(i))) {
      best = static_cast<Isa>(i);
      break;
    }
  }
  const char* forced = std::getenv("SPARSE_TRANSFER_KERNELS_ISA");
  if (forced == nullptr || forced[0] == '\0') {
    *isa = best;
    return true;
  }
  for (int i = kScalar; i <= kAmx; ++i) {
    if (std::strcmp(forced, IsaName(static_cast<Isa>(i))) == 0) {
      if (i > best) {
        *error = std::string("SPARSE_TRANSFER_KERNELS_ISA=") + forced +
                 ": this CPU lacks it (the best path here is " + IsaName(best) + ")";
        return false;
      }
      *isa = static_cast<Isa>(i);
      return true;
    }
  }
  *error = std::string("SPARSE_TRANSFER_KERNELS_ISA=") + forced +
           ": unknown path (choose amx, avx512vnni, avx512bw, avx2, sse41 or scalar)";
  return false;
}

int TileTokens(Isa isa) {
  switch (isa) {
    case kAmx:
    case kAvx512vnni:
    case kAvx512bw: return kT512;
    case kAvx2: return kTAvx2;
    default: return 16;
  }
}

bool PackWeight(const int32_t* row_ptr, int64_t n_plus_1, const int32_t* block_col,
                int64_t nnzb, const int8_t* values, int64_t values_count, int64_t k,
                Packed* out, std::string* error) {
  if (k <= 0) return (*error = "attribute K must be positive, got " + std::to_string(k)), false;
  if (n_plus_1 < 1) return (*error = "row_ptr must hold N + 1 >= 1 entries"), false;
  const int64_t n = n_plus_1 - 1, kb = (k + 3) / 4;
  if (values_count != nnzb * 4) {
    *error = "values must be int8 [nnzb, 4] with nnzb = " + std::to_string(nnzb) +
             " (block_col's size), got " + std::to_string(values_count) + " values";
    return false;
  }
  if (row_ptr[0] != 0 || row_ptr[n] != nnzb) {
    *error = "row_ptr must start at 0 and end at nnzb = " + std::to_string(nnzb) + ", got " +
             std::to_string(row_ptr[0]) + " .. " + std::to_string(row_ptr[n]);
    return false;
  }
  out->n = n, out->k = k, out->kb = kb;
  out->row_ptr.assign(row_ptr, row_ptr + n_plus_1);
  out->col.resize(nnzb), out->w4.resize(nnzb);
  out->wsum.assign((n + kRowGroup - 1) / kRowGroup * kRowGroup, 0);
  out->narrow = true;
  for (int64_t r = 0; r < n; ++r) {
    if (row_ptr[r + 1] < row_ptr[r] || row_ptr[r + 1] > nnzb) {  // never read past block_col
      *error = "row_ptr must not decrease and stay within nnzb = " + std::to_string(nnzb) +
               ", got " + std::to_string(row_ptr[r + 1]) + " after " + std::to_string(row_ptr[r]);
      return false;
    }
    for (int64_t b = row_ptr[r]; b < row_ptr[r + 1]; ++b) {
      const int32_t c = block_col[b];
      if (c < 0 || c >= kb || (b > row_ptr[r] && c <= block_col[b - 1])) {
        *error = "block_col of row " + std::to_string(r) + " must ascend within [0, " +
                 std::to_string(kb) + "), got " + std::to_string(c);
        return false;
      }
      int32_t sum = 0;
      for (int j = 0; j < 4; ++j) {
        const int8_t v = values[b * 4 + j];
        sum += v;
        if (v < -64 || v > 64) out->narrow = false;
      }
      out->col[b] = c;
      std::memcpy(&out->w4[b], values + b * 4, 4);
      out->wsum[r] += sum;
    }
  }
  return true;
}

double QuadBlocks(Isa isa) {
  // Measured on Sapphire Rapids (90% unstructured, 768x3072): 1.75 with vpdpbusd (AVX-512
  // VNNI: a quad is 4 loads, 8 byte/word unpacks, 4 vpdpbusd; a block 4 vpdpbusd) and
  // kQuadCostAvx2 with vpmaddubsw + vpmaddwd (AVX2, AVX-512BW).
  return isa >= kAvx512vnni ? 1.75 : kQuadCostAvx2;
}

double FormCost(Isa isa, const Packed& w) {
  return 4.0 * (w.quad ? QuadBlocks(isa) * w.quad_w4.size() : w.col.size());
}

void PlanQuads(Isa isa, Packed* w) {
  // AVX-512 VNNI: vpdpbusd, any int8; AVX-512BW and AVX2: vpmaddubsw, 7-bit weights only.
  if (!(isa >= kAvx512vnni || ((isa == kAvx2 || isa == kAvx512bw) && w->narrow))) return;
  const int tile = TileTokens(isa);
  w->quad_ptr.assign(w->n + 1, 0);
  w->quad_off.clear(), w->quad_w4.clear();
  for (int64_t r = 0; r < w->n; ++r) {
    int8_t ws[4] = {0, 0, 0, 0};
    int32_t offs[4] = {0, 0, 0, 0};
    int fill = 0;
    for (int32_t b = w->row_ptr[r]; b < w->row_ptr[r + 1]; ++b) {
      int8_t v[4];
      std::memcpy(v, &w->w4[b], 4);
      for (int j = 0; j < 4; ++j) {
        if (v[j] == 0) continue;
        ws[fill] = v[j], offs[fill] = (4 * w->col[b] + j) * tile;
        if (++fill == 4) {
          w->quad_off.insert(w->quad_off.end(), offs, offs + 4);
          w->quad_w4.push_back(0), std::memcpy(&w->quad_w4.back(), ws, 4);
          fill = 0;
        }
      }
    }
    if (fill > 0) {  // pad with a real column and weight 0
      for (int j = fill; j < 4; ++j) ws[j] = 0, offs[j] = offs[0];
      w->quad_off.insert(w->quad_off.end(), offs, offs + 4);
      w->quad_w4.push_back(0), std::memcpy(&w->quad_w4.back(), ws, 4);
    }
    w->quad_ptr[r + 1] = static_cast<int32_t>(w->quad_w4.size());
  }
  w->quad = 4.0 * QuadBlocks(isa) * w->quad_w4.size() < 4.0 * w->col.size();
  if (!w->quad) w->quad_ptr.clear(), w->quad_off.clear(), w->quad_w4.clear();
}

void RowScalar(const Packed& w, int64_t n, const uint8_t* ap, int tile, int32_t* acc) {
  std::fill(acc, acc + tile, 0);
  for (int32_t b = w.row_ptr[n]; b < w.row_ptr[n + 1]; ++b) {
    int8_t wv[4];
    std::memcpy(wv, &w.w4[b], 4);
    const uint8_t* p = ap + static_cast<size_t>(w.col[b]) * tile * 4;
    for (int t = 0; t < tile; ++t) {
      acc[t] += p[4 * t] * wv[0] + p[4 * t + 1] * wv[1] + p[4 * t + 2] * wv[2] +
                p[4 * t + 3] * wv[3];
    }
  }
}

float GeluScalar(float y) {
  // spec.gelu in float32: 0.5 * y * (1 + erf(y / float32(sqrt(2)))), erf rounded to float32.
  const float t = y / 1.41421356237309515f;
  const float e = static_cast<float>(std::erf(static_cast<double>(t)));
  return (0.5f * y) * (1.0f + e);
}

uint8_t QuantizeScalar(float y, float scale, int32_t zp) {
  float q = std::nearbyint(y / scale) + static_cast<float>(zp);
  q = std::min(std::max(q, 0.0f), 255.0f);
  return static_cast<uint8_t>(q);
}

void EpilogueScalar(const Packed& w, const int32_t* tmp, int tile, int64_t mv, int64_t ng,
                    int64_t nv, int32_t a_zp, const Epilogue& ep, void* out) {
  const int64_t ld = ep.out_cols;
  for (int64_t m = 0; m < mv; ++m) {
    for (int64_t j = 0; j < nv; ++j) {
      const int64_t n = ng + j, at = m * ld + n - ep.first_col;
      const int32_t v = tmp[j * tile + m] - a_zp * w.wsum[n];
      if (ep.kind == kOutI32) {
        static_cast<int32_t*>(out)[at] = v;
        continue;
      }
      float y = static_cast<float>(v) * ep.scale[n];
      y = y + ep.bias[n];
      if (ep.gelu) y = GeluScalar(y);
      if (ep.kind == kOutF32) {
        static_cast<float*>(out)[at] = y;
      } else {
        static_cast<uint8_t*>(out)[at] = QuantizeScalar(y, ep.y_scale, ep.y_zp);
      }
    }
  }
}

void TileScalar(const Packed& w, const uint8_t* ap, int tile, int64_t mv, int64_t n0, int64_t n1,
                int32_t a_zp, const Epilogue& ep, void* out) {
  std::vector<int32_t> tmp(static_cast<size_t>(kRowGroup) * tile);
  for (int64_t ng = n0; ng < n1; ng += kRowGroup) {
    const int64_t nv = std::min<int64_t>(kRowGroup, n1 - ng);
    for (int64_t j = 0; j < nv; ++j) RowScalar(w, ng + j, ap, tile, &tmp[j * tile]);
    EpilogueScalar(w, tmp.data(), tile, mv, ng, nv, a_zp, ep, out);
  }
}

void RepackU8Scalar(const uint8_t* a, int64_t m, int64_t k, int tile, int64_t t0, uint8_t* dst) {
  const int64_t kb = (k + 3) / 4;
  std::memset(dst, 0, static_cast<size_t>(kb) * tile * 4);
  for (int64_t t = 0; t < tile && t0 + t < m; ++t) {
    const uint8_t* row = a + (t0 + t) * k;
    for (int64_t b = 0; b < kb; ++b) {
      const int64_t width = std::min<int64_t>(4, k - 4 * b);
      std::memcpy(dst + (b * tile + t) * 4, row + 4 * b, width);
    }
  }
}

void RepackF32Scalar(const float* x, int64_t m, int64_t k, float scale, int32_t zp, int tile,
                     int64_t t0, uint8_t* dst) {
  const int64_t kb = (k + 3) / 4;
  std::memset(dst, 0, static_cast<size_t>(kb) * tile * 4);
  for (int64_t t = 0; t < tile && t0 + t < m; ++t) {
    const float* row = x + (t0 + t) * k;
    for (int64_t i = 0; i < k; ++i) {
      dst[((i / 4) * tile + t) * 4 + (i % 4)] = QuantizeScalar(row[i], scale, zp);
    }
  }
}

}  // namespace st
