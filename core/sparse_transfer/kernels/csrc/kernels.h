// Sparse int8 matmul kernels: 1x4 block-sparse int8 weights x uint8 activations.
// See ../spec.py for what every op computes; this file is the engine under the ORT glue.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace st {

// Dispatch paths, lowest first. Chosen once at load (SelectIsa), never at build time. kAmx is
// AVX-512 VNNI, plus AMX tiles for the attention's two products and for the Linears whose
// weights PlanAmx finds cheaper on tiles (16 output rows sharing their kept 1x4 blocks, or any
// weight's chunks expanded from its non-zeros).
enum Isa : int { kScalar = 0, kSse41 = 1, kAvx2 = 2, kAvx512bw = 3, kAvx512vnni = 4, kAmx = 5 };
const char* IsaName(Isa isa);
bool CpuHas(Isa isa);
// The best path this CPU runs, or a lower one forced by SPARSE_TRANSFER_KERNELS_ISA; false and
// `error` when the variable names an unknown path or one this CPU lacks.
bool SelectIsa(Isa* isa, std::string* error);
// Tokens per tile: the activations of one tile are repacked as [kb][token][4 bytes].
int TileTokens(Isa isa);

constexpr int kRowGroup = 16;  // output rows computed (and transposed) together
constexpr int kTileSlackBytes = 16 * 256;  // zeroed bytes after a call's last repacked tile

// A weight packed once at kernel creation.
struct Packed {
  int64_t n = 0, k = 0, kb = 0;
  std::vector<int32_t> row_ptr;  // [n + 1]
  std::vector<int32_t> col;      // [nnzb] block column kb
  std::vector<int32_t> w4;       // [nnzb] the block's four int8 weights in one int32
  std::vector<int32_t> wsum;     // [n rounded up to kRowGroup] sum of row n's weights
  bool narrow = true;            // every |w| <= 64: pair sums of u8 x s8 fit int16
  // The "quad" form (AVX-512 VNNI; AVX-512BW and AVX2 with 7-bit weights), for scattered
  // weights: each row's non-zeros in groups of four arbitrary columns (byte offsets
  // k * tile into [k][tile tokens] activations) with their four weights; used when PlanQuads
  // finds it cheaper than the 1x4 blocks.
  bool quad = false;
  std::vector<int32_t> quad_ptr;  // [n + 1]
  std::vector<int32_t> quad_off;  // [4 * nquads]
  std::vector<int32_t> quad_w4;   // [nquads]
  // The AMX form (path amx): per group of kRowGroup output rows, the union of the rows' kept
  // block columns in chunks of 16. A chunk is one TDPBSUD A tile, the rows' weights
  // [16 rows][16 blocks x 4] (zero where a row lacks the block and past the union's end), and
  // the byte offsets (kb * 256) of its 16 block columns in a repacked 64-token tile; chunks
  // whose columns are 16 consecutive blocks are read in place (chunk_dense), the others
  // gathered. Kept when PlanAmx finds it cheaper than the blocks or quads.
  bool amx = false;
  std::vector<int32_t> chunk_ptr;    // [groups + 1]
  std::vector<int32_t> chunk_off;    // [16 * chunks]
  std::vector<uint8_t> chunk_dense;  // [chunks]
  std::vector<int8_t> chunk_w;       // [chunks * 1024]
  // The expanded AMX form (path amx, with `amx` set too), for weights no 16-row group shares:
  // every group multiplies every 64-byte chunk of K on tiles, zeros included, but only the
  // non-zeros are stored and read. Per group and chunk, each of its 16 rows keeps a 64-bit mask
  // of its non-zero bytes and their values (in x_vals from x_base + x_pre), expanded (vpexpandb)
  // into the chunk's A tile just before its product.
  bool expanded = false;
  int64_t x_chunks = 0;          // chunks per 16-row group: ceil(kb / 16)
  std::vector<uint64_t> x_mask;  // [groups * x_chunks * 16]
  std::vector<uint16_t> x_pre;   // [groups * x_chunks * 16] the row's first value in the chunk's
  std::vector<uint32_t> x_base;  // [groups * x_chunks] the chunk's first value in x_vals
  std::vector<int8_t> x_vals;    // [non-zeros]
};
// Builds the quad form and keeps it when its estimated cost (byte/word unpacks) beats the
// blocks'; for the AVX-512 and AVX2 paths.
void PlanQuads(Isa isa, Packed* w);
// Builds an AMX form (the 16-row groups' kept columns, or every chunk expanded) and keeps the
// cheaper one (dropping the quads) when its estimated cost beats the chosen form's; amx path.
void PlanAmx(Isa isa, Packed* w);
// The form RunTile will use for `w`: "amx", "amx-expanded", "quads" or "blocks".
const char* FormName(const Packed& w);
// Turns a tile repacked as [kb][64][4] into the quad form's [k][64] bytes, in place.
void BlocksToQuadLayout(Isa isa, int64_t kb, uint8_t* tile);
// Validates the spec's (row_ptr, block_col, values) and packs them; false and `error` if bad.
bool PackWeight(const int32_t* row_ptr, int64_t n_plus_1, const int32_t* block_col,
                int64_t nnzb, const int8_t* values, int64_t values_count, int64_t k,
                Packed* out, std::string* error);

enum OutKind : int { kOutI32 = 0, kOutF32 = 1, kOutU8 = 2 };
struct Epilogue {
  OutKind kind = kOutI32;
  const float* scale = nullptr;  // [N] float32(x_scale * w_scale[n])
  const float* bias = nullptr;   // [N]
  bool gelu = false;
  float y_scale = 1.f;
  int32_t y_zp = 0;
  // Where output row n goes: column n - first_col of an output `out_cols` wide (an op with
  // several outputs writes each its own part of the weight's rows).
  int64_t out_cols = 0;
  int64_t first_col = 0;
};

// Repacks rows [tile * T, tile * T + T) of A (u8 [m, k]) into `dst` ([kb][T][4], zero padded).
void RepackU8(Isa isa, const uint8_t* a, int64_t m, int64_t k, int64_t tile, uint8_t* dst);
// The same for float X, quantized on the way (QuantizeLinear: x / scale, half to even, + zp).
void RepackF32(Isa isa, const float* x, int64_t m, int64_t k, float scale, int32_t zp,
               int64_t tile, uint8_t* dst);

// Output rows [n0, n1) (n0 a multiple of kRowGroup) for the tokens of one tile: `ap` is the
// tile's repacked activations, `mv` its valid tokens, `out` the output's first valid token row.
// The expanded AMX form reads whole 16-column chunks: up to kTileSlackBytes past a tile's
// kb columns (into the next tile, or the zeroed slack after the last one) times zero weights.
void RunTile(Isa isa, const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
             int32_t a_zp, const Epilogue& ep, void* out);

// Int8 attention (spec.py's Int8Attention) of one (batch, head) `bh` = b * heads + h: q, k, v
// uint8 [B, S, H*D] (k and v with zero point 128), mask float [B, S] (the graph's additive
// [B, 1, 1, S]), out float [B, S, H*D], or out_u8 (QuantizeLinear(out, y_scale, y_zp): the
// next Linear's input) when not null.
struct AttentionArgs {
  const uint8_t *q = nullptr, *k = nullptr, *v = nullptr;
  const float* mask = nullptr;
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0;
  int32_t q_zp = 0, p_zp = 0;
  float qk_scale = 1.f, score_mul = 1.f, p_scale = 1.f, pv_scale = 1.f;
  float* out = nullptr;
  uint8_t* out_u8 = nullptr;
  float y_scale = 1.f;
  int32_t y_zp = 0;
};
void AttentionHead(Isa isa, const AttentionArgs& a, int64_t bh);

// ResidualLayerNorm (spec.py) of rows [r0, r1): x, residual, y float [rows, n]; gamma and beta
// [n]; yq (uint8 [rows, n], QuantizeLinear(y, y_scale, y_zp)) when not null.
struct LayerNormArgs {
  const float *x = nullptr, *residual = nullptr, *gamma = nullptr, *beta = nullptr;
  int64_t rows = 0, n = 0;
  float epsilon = 0.f;
  float* y = nullptr;
  uint8_t* yq = nullptr;
  float y_scale = 1.f;
  int32_t y_zp = 0;
};
void LayerNormRows(Isa isa, const LayerNormArgs& a, int64_t r0, int64_t r1);

// EmbeddingsLayerNormToU8: one uint8-coded table, its dequantization and the ids read from it
// (checked in [-rows, rows) before use; negative ids count from the end, as Gather's).
struct EmbeddingTable {
  const uint8_t* codes = nullptr;  // [rows, n]
  int64_t rows = 0;
  float scale = 1.f;
  int32_t zp = 0;
  const int64_t* ids = nullptr;
};
struct EmbeddingArgs {
  EmbeddingTable word, type, position;
  int64_t shared_positions = 0;  // > 0: one row of position ids (this many) for every sequence
  LayerNormArgs norm;            // x = y = the float output; the residual is EmbeddingRows' own
};
// Token rows [r0, r1): word + type into norm.y, the position rows as the residual, then the
// LayerNorm (LayerNormRows) over them.
void EmbeddingRows(Isa isa, const EmbeddingArgs& a, int64_t r0, int64_t r1);

}  // namespace st
