// EmbeddingsLayerNormToU8 (spec.py): BERT's three embedding lookups, dequantized and summed in
// the graph's order, then the residual LayerNorm (layernorm.cc) over them, per token row. The
// ids were checked by the op (ops.cc) before any row is read.
#include <algorithm>
#include <cstdint>
#include <memory>

#include "kernels.h"

namespace st {
namespace {

// Row `id` of `t` dequantized as DequantizeLinear does, float(code - zp) * scale, into `out`
// (or added to it). Plain loops, vectorized for each caller's target below: every step is
// one exact conversion or one float32 rounding, so the width does not change the bits.
template <bool kAdd>
inline void DequantizeRow(const EmbeddingTable& t, int64_t id, int64_t n, float* out) {
  const uint8_t* c = t.codes + (id < 0 ? id + t.rows : id) * n;
  for (int64_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(static_cast<int32_t>(c[i]) - t.zp) * t.scale;
    out[i] = kAdd ? out[i] + v : v;
  }
}

// Rows [r0, r1): word + type into the LayerNorm's x (its output, in place), position into
// `res` (the block's own rows).
#define ST_EMBEDDING_ROWS(NAME, TGT)                                                \
  TGT void NAME(const EmbeddingArgs& a, int64_t r0, int64_t r1, float* res) {       \
    const int64_t n = a.norm.n;                                                     \
    for (int64_t r = r0; r < r1; ++r) {                                             \
      float* x = a.norm.y + r * n;                                                  \
      DequantizeRow<false>(a.word, a.word.ids[r], n, x);                            \
      DequantizeRow<true>(a.type, a.type.ids[r], n, x);                             \
      const int64_t p = a.shared_positions > 0 ? r % a.shared_positions : r;        \
      DequantizeRow<false>(a.position, a.position.ids[p], n, res + (r - r0) * n);   \
    }                                                                               \
  }

ST_EMBEDDING_ROWS(RowsBaseline, )
ST_EMBEDDING_ROWS(RowsAvx2, __attribute__((target("avx2"))))
ST_EMBEDDING_ROWS(Rows512, __attribute__((target("avx512f,avx512bw"))))

}  // namespace

void EmbeddingRows(Isa isa, const EmbeddingArgs& a, int64_t r0, int64_t r1) {
  // the block's position rows, written before they are read (no zeroing): in cache
  std::unique_ptr<float[]> res(new float[static_cast<size_t>((r1 - r0) * a.norm.n)]);
  if (isa >= kAvx512bw) {
    Rows512(a, r0, r1, res.get());
  } else if (isa >= kAvx2) {
    RowsAvx2(a, r0, r1, res.get());
  } else {
    RowsBaseline(a, r0, r1, res.get());
  }
  LayerNormArgs rows = a.norm;  // the block alone: its rows from 0, the residual its own
  const int64_t at = r0 * a.norm.n;
  rows.x = a.norm.x + at, rows.y = a.norm.y + at, rows.yq = a.norm.yq + at;
  rows.residual = res.get(), rows.rows = r1 - r0;
  LayerNormRows(isa, rows, 0, r1 - r0);
}

}  // namespace st
