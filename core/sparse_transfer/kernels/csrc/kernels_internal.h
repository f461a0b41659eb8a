// Shared between the portable and the instruction-set specific translation units.
#pragma once

#include "kernels.h"

namespace st {

constexpr double kQuadCostAvx2 = 1.75;  // a quad's cost in 1x4 blocks on AVX2 (measured)
// A quantized quotient (x / scale) is clamped to +-kQuotientCap before its int32 conversion:
// past int32 the conversion gives INT_MIN (0 after saturation where QuantizeLinear gives 255),
// and every value past the cap saturates alike, so nothing else changes.
constexpr float kQuotientCap = 1024.f;

// A quad's cost in 1x4 blocks on `isa`'s row kernels.
double QuadBlocks(Isa isa);
// The cost of the form `w` runs in (its quads, or its 1x4 blocks), in vpdpbusd per 16
// tokens: what PlanAmx weighs its tiles against.
double FormCost(Isa isa, const Packed& w);

void RowScalar(const Packed& w, int64_t n, const uint8_t* ap, int tile, int32_t* acc);
float GeluScalar(float y);
uint8_t QuantizeScalar(float y, float scale, int32_t zp);
// tmp is [kRowGroup][tile] int32 (row-major by output row); writes rows [ng, ng + nv).
void EpilogueScalar(const Packed& w, const int32_t* tmp, int tile, int64_t mv, int64_t ng,
                    int64_t nv, int32_t a_zp, const Epilogue& ep, void* out);
void TileScalar(const Packed& w, const uint8_t* ap, int tile, int64_t mv, int64_t n0, int64_t n1,
                int32_t a_zp, const Epilogue& ep, void* out);
void RepackU8Scalar(const uint8_t* a, int64_t m, int64_t k, int tile, int64_t t0, uint8_t* dst);
void RepackF32Scalar(const float* x, int64_t m, int64_t k, float scale, int32_t zp, int tile,
                     int64_t t0, uint8_t* dst);

#define TGT_AMX                                                                         \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,amx-tile," \
                        "amx-int8")))

struct alignas(64) TileConfig {  // the LDTILECFG memory layout, palette 1
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tokens per AVX-512 tile: 4 zmm accumulators per row (128 tokens measured slower: L1 misses).
constexpr int kT512 = 64;
// Tokens per AVX2 tile: 4 ymm accumulators per row.
constexpr int kTAvx2 = 32;

// The AVX-512 epilogue: tmp is [kRowGroup][kT512] int32 (row-major by output row); writes
// output rows [ng, ng + nv) of tokens [0, mv).
void Epilogue512(const Packed& w, const int32_t* tmp, int64_t mv, int64_t ng, int64_t nv,
                 int32_t a_zp, const Epilogue& ep, void* out);
// Epilogue512 for the tile's 16-token groups [mb0, mb1) only.
void EpilogueGroups512(const Packed& w, const int32_t* tmp, int64_t mv, int64_t ng, int64_t nv,
                       int32_t a_zp, const Epilogue& ep, void* out, int64_t mb0, int64_t mb1);
void TileAmx(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
             int32_t a_zp, const Epilogue& ep, void* out);

void TileSse41(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
               int32_t a_zp, const Epilogue& ep, void* out);
void TileAvx2(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
              int32_t a_zp, const Epilogue& ep, void* out);
void TileAvx512bw(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
                  int32_t a_zp, const Epilogue& ep, void* out);
void TileAvx512vnni(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
                    int32_t a_zp, const Epilogue& ep, void* out);

}  // namespace st
