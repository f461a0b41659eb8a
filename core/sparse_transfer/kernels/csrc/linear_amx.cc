// Sparse Linears on AMX tiles (path amx): weights whose 16-row groups share their kept 1x4
// blocks (the `block16x4` mask type trains such weights; dense ones qualify too).
//
// Per group of 16 output rows the union of the rows' kept block columns is cut into chunks of
// 16 blocks. One TDPBSUD multiplies a chunk's A tile, the 16 rows' signed weights [16][64],
// by a B tile of the same 16 block columns' unsigned activations for 16 tokens [16][64]: in
// the [kb][64 tokens][4] tile the rest of the library repacks, one block column of 16 tokens
// is 64 contiguous bytes, so B is 16 row copies (or, for 16 consecutive columns, the tile
// itself read with a stride of 256 bytes). 16 x 16 x 64 multiply-adds per instruction, where
// vpdpbusd does 16 x 4; the C tiles [16 rows][16 tokens] are the row kernels' accumulators, so
// the AVX-512 epilogue (zero point, scale, bias, GELU, requantization) follows unchanged.
// Integer products are exact for any int8 weight, as vpdpbusd's.
//
// Weights whose rows share nothing (90% unstructured, or dense ones) take the expanded form:
// every 16-row group multiplies every 16-column chunk of K, its zeros included, with B read in
// place; only the non-zeros are stored, and each chunk's A tile is expanded from them (one
// vpexpandb per row) while the chunk before it multiplies. A tile product runs 16 x 64 x 16
// multiply-adds where the quads' unpacks and vpdpbusd manage about 64 x 4 useful ones in the
// same time, so at 90% sparsity the zeros' products cost less than skipping them does.
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "kernels.h"
#include "kernels_internal.h"

namespace st {
namespace {

constexpr int kChunk = 16;              // block columns per chunk (a tile's 64-byte depth)
constexpr int kChunkBytes = 16 * 64;    // one A tile
constexpr int kColumnBytes = kT512 * 4;  // one block column of a repacked tile
// A chunk's cost per 64-token tile in the 1x4 blocks' unit (4 vpdpbusd per block per tile):
// 4 tile products, 5 tile loads and 64 row copies. Measured on Sapphire Rapids, 1 thread,
// same process: a 16-row group of 90% 16x4 weights (K = 768, 19.2 blocks per row, 2 chunks)
// takes 0.33 us on tiles where its 1229 units take 0.66 us, so a chunk is about 300 units;
// tile products run far below their peak here, the copies and tile loads bound them.
constexpr double kChunkCost = 300.0;
// An expanded chunk's cost in the same unit: its 16 expansions, 5 tile loads and 4 products
// per 64-token tile, the epilogue mostly hidden behind them. Measured as above (whole Linears
// with their epilogues, 768 x 3072 and 3072 x 768, 64 tokens): 90% unstructured 155 and 119 us
// expanded against 207 and 170 us as quads (179 units a chunk), 90% 1x4 blocks 125 and 102 us
// as blocks (102 units): about 125 units. So it beats the quads from about 7% non-zero weights
// up and the 1x4 blocks from about 12% of blocks kept.
constexpr double kExpandedChunkCost = 125.0;

// Tile registers: C for token groups 0-3, two A (weights) and two B (activations), each pair
// alternating.
#define kTileA0 4
#define kTileA1 5
#define kTileB0 6
#define kTileB1 7

#define TGT_XAMX                                                                        \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi2,fma," \
                        "amx-tile,amx-int8")))

// The kept block columns of rows [r0, r1), sorted and unique.
std::vector<int32_t> GroupColumns(const Packed& w, int64_t r0, int64_t r1) {
  std::vector<int32_t> cols(w.col.begin() + w.row_ptr[r0], w.col.begin() + w.row_ptr[r1]);
  std::sort(cols.begin(), cols.end());
  cols.erase(std::unique(cols.begin(), cols.end()), cols.end());
  return cols;
}

// Appends group g's chunks (columns `cols`) to the AMX form of `w`.
void AppendGroup(const std::vector<int32_t>& cols, int64_t g, Packed* w) {
  const int64_t chunks = (static_cast<int64_t>(cols.size()) + kChunk - 1) / kChunk;
  const size_t base = w->chunk_dense.size();
  w->chunk_w.resize((base + chunks) * kChunkBytes, 0);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t first = c * kChunk, count = std::min<int64_t>(kChunk, cols.size() - first);
    bool consecutive = count == kChunk;
    for (int64_t i = 0; i < kChunk; ++i) {  // padding repeats a real column (weight 0)
      const int32_t col = cols[first + std::min(i, count - 1)];
      w->chunk_off.push_back(col * kColumnBytes);
      if (i > 0 && i < count) consecutive = consecutive && col == cols[first + i - 1] + 1;
    }
    w->chunk_dense.push_back(consecutive ? 1 : 0);
  }
  for (int64_t r = 0; r < kRowGroup && g * kRowGroup + r < w->n; ++r) {
    const int64_t row = g * kRowGroup + r;
    for (int32_t b = w->row_ptr[row]; b < w->row_ptr[row + 1]; ++b) {
      const int64_t at = std::lower_bound(cols.begin(), cols.end(), w->col[b]) - cols.begin();
      int8_t* dst = w->chunk_w.data() + (base + at / kChunk) * kChunkBytes + r * 64;
      std::memcpy(dst + (at % kChunk) * 4, &w->w4[b], 4);
    }
  }
  w->chunk_ptr.push_back(static_cast<int32_t>(base + chunks));
}

// The G accumulator tiles (C, token groups 0 to G-1): zeroed, and stored into tmp
// [kRowGroup][kT512] (row-major by output row, as the row kernels leave it).
template <int G>
TGT_AMX inline void ZeroAccumulators() {
  _tile_zero(0);
  if (G > 1) _tile_zero(1);
  if (G > 2) _tile_zero(2);
  if (G > 3) _tile_zero(3);
}

template <int G>
TGT_AMX inline void StoreAccumulators(int32_t* tmp) {
  constexpr int64_t ld = kT512 * 4;
  _tile_stored(0, tmp, ld);
  if (G > 1) _tile_stored(1, tmp + 16, ld);
  if (G > 2) _tile_stored(2, tmp + 32, ld);
  if (G > 3) _tile_stored(3, tmp + 48, ld);
}

// Token group t's B of chunk c: its 16 block columns' 64-byte rows, in place (stride 256)
// when they are consecutive, else copied into `buf` (stride 64).
TGT_AMX inline const uint8_t* ChunkB(const Packed& w, int64_t c, const uint8_t* ap, int t,
                                     uint8_t* buf) {
  const int32_t* off = w.chunk_off.data() + kChunk * c;
  if (w.chunk_dense[c]) return ap + off[0] + 64 * t;
  for (int i = 0; i < kChunk; ++i) {
    _mm512_store_si512(buf + 64 * i, _mm512_load_si512(ap + off[i] + 64 * t));
  }
  return buf;
}

// C tile T += A x B, with B from a compile-time tile (tile numbers are immediates).
#define ST_AMX_DOT(T, A, B, SRC, STRIDE) \
  _tile_loadd(B, SRC, STRIDE);           \
  _tile_dpbsud(T, A, B);

// Chunk c into the G accumulators with A tile `A`: every B is gathered first (the copies run
// ahead of the products), then loaded alternately into two B tiles.
#define ST_AMX_CHUNK(A)                                                              \
  {                                                                                  \
    _tile_loadd(A, w.chunk_w.data() + static_cast<size_t>(c) * kChunkBytes, 64);     \
    const uint8_t* b[4];                                                             \
    for (int t = 0; t < G; ++t) b[t] = ChunkB(w, c, ap, t, buf[t]);                  \
    const int64_t stride = w.chunk_dense[c] ? kColumnBytes : 64;                     \
    ST_AMX_DOT(0, A, kTileB0, b[0], stride)                                          \
    if (G > 1) { ST_AMX_DOT(1, A, kTileB1, b[1], stride) }                           \
    if (G > 2) { ST_AMX_DOT(2, A, kTileB0, b[2], stride) }                           \
    if (G > 3) { ST_AMX_DOT(3, A, kTileB1, b[3], stride) }                           \
  }

// Group g's accumulators for G groups of 16 tokens into tmp [kRowGroup][kT512]; chunks
// alternate between two A tiles so one chunk's weights load while the last one's multiply.
template <int G>
TGT_AMX void GroupAmx(const Packed& w, int64_t g, const uint8_t* ap, int32_t* tmp) {
  alignas(64) uint8_t buf[4][kChunkBytes];
  ZeroAccumulators<G>();
  const int32_t end = w.chunk_ptr[g + 1];
  for (int32_t c = w.chunk_ptr[g]; c < end; ++c) {
    ST_AMX_CHUNK(kTileA0)
    if (++c == end) break;
    ST_AMX_CHUNK(kTileA1)
  }
  StoreAccumulators<G>(tmp);
}

// Every tile 16 rows x 64 bytes: also ONNX Runtime's own AMX GEMM configuration (MLAS,
// qgemm_kernel_amx.cpp, MlasGemmQuantThreadInit), which reloads its configuration only where
// the thread's current one differs. LDTILECFG is slow, so it runs only when this thread's
// configuration is another one (the attention's, another library's, or none yet); the tiles
// stay configured after the op for the next Linear.
TGT_AMX void ConfigureLinearTiles() {
  static const TileConfig wanted = [] {
    TileConfig c;
    for (int t = 0; t < 8; ++t) c.rows[t] = 16, c.colsb[t] = 64;
    return c;
  }();
  TileConfig current;
  _tile_storeconfig(&current);
  if (std::memcmp(&current, &wanted, sizeof(TileConfig)) != 0) _tile_loadconfig(&wanted);
}

// Chunk gc's A tile, [16 rows][64 bytes], from its rows' masks and non-zero values.
TGT_XAMX inline void ExpandChunk(const Packed& w, int64_t gc, int8_t* a) {
  const int8_t* v = w.x_vals.data() + w.x_base[gc];
  const uint64_t* mask = w.x_mask.data() + gc * 16;
  const uint16_t* pre = w.x_pre.data() + gc * 16;
  for (int r = 0; r < 16; ++r) {
    _mm512_store_si512(a + 64 * r, _mm512_maskz_expandloadu_epi8(mask[r], v + pre[r]));
  }
}

// Expanded A tiles in flight: chunk i (counted over a run of groups) in ring[i % kRing],
// expanded kAhead chunks before its product so that its stores are done when the tile load
// reads them (measured: 1 chunk ahead 181 cycles a chunk, 2 ahead 159-168, more no better).
constexpr int64_t kAhead = 2, kRing = 4;
struct ExpandRing {
  alignas(64) int8_t a[kRing][kChunkBytes];
  int64_t end = 0;  // one past the run's last chunk
};

TGT_XAMX inline void ExpandAhead(const Packed& w, int64_t i, ExpandRing* ring) {
  if (i + kAhead < ring->end) ExpandChunk(w, i + kAhead, ring->a[(i + kAhead) % kRing]);
}

// Chunk c of group g into the G accumulators with A tile `A`, B in place.
#define ST_XAMX_CHUNK(A)                                                              \
  {                                                                                   \
    const int64_t i = g * w.x_chunks + c;                                             \
    _tile_loadd(A, ring->a[i % kRing], 64);                                           \
    const uint8_t* b = ap + c * 16 * kColumnBytes;                                    \
    ST_AMX_DOT(0, A, kTileB0, b, kColumnBytes)                                        \
    if (G > 1) { ST_AMX_DOT(1, A, kTileB1, b + 64, kColumnBytes) }                    \
    ExpandAhead(w, i, ring);                                                          \
    if (G > 2) { ST_AMX_DOT(2, A, kTileB0, b + 128, kColumnBytes) }                   \
    if (G > 3) { ST_AMX_DOT(3, A, kTileB1, b + 192, kColumnBytes) }                   \
  }

// The group before's epilogue, run one 16-token group at a time between this group's chunk
// products: the vector units work while the tiles multiply (it had left AMX idle for a third
// of a 768-wide group).
struct PendingEpilogue {
  const int32_t* tmp = nullptr;
  int64_t mv = 0, ng = 0, nv = 0;
  int64_t next = 0, groups = 0;  // token groups done, and in all (none before the first group)
  int32_t a_zp = 0;
  const Epilogue* ep = nullptr;
  void* out = nullptr;
};

TGT_XAMX inline void EpilogueStep(const Packed& w, PendingEpilogue* p) {
  if (p->next == p->groups) return;
  EpilogueGroups512(w, p->tmp, p->mv, p->ng, p->nv, p->a_zp, *p->ep, p->out, p->next,
                    p->next + 1);
  ++p->next;
}

template <int G>
TGT_XAMX void GroupExpanded(const Packed& w, int64_t g, const uint8_t* ap, ExpandRing* ring,
                            PendingEpilogue* pending, int32_t* tmp) {
  ZeroAccumulators<G>();
  const int64_t every = std::max<int64_t>(1, w.x_chunks / (pending->groups + 1));
  for (int64_t c = 0; c < w.x_chunks; ++c) {
    ST_XAMX_CHUNK(kTileA0)
    if (c % every == every - 1) EpilogueStep(w, pending);
    if (++c == w.x_chunks) break;
    ST_XAMX_CHUNK(kTileA1)
    if (c % every == every - 1) EpilogueStep(w, pending);
  }
  while (pending->next < pending->groups) EpilogueStep(w, pending);
  StoreAccumulators<G>(tmp);
}

// The expanded form's chunks per 16-row group: K in whole chunks of kChunk block columns.
int64_t ExpandedChunks(const Packed& w) { return (w.kb + kChunk - 1) / kChunk; }

// Row r of group g as 4 * x_chunks bytes of K (zero past the weight's rows and columns).
void GroupRow(const Packed& w, int64_t g, int r, std::vector<int8_t>* row) {
  row->assign(w.x_chunks * 64, 0);
  const int64_t n = g * kRowGroup + r;
  if (n >= w.n) return;
  for (int32_t b = w.row_ptr[n]; b < w.row_ptr[n + 1]; ++b) {
    std::memcpy(row->data() + 4 * static_cast<int64_t>(w.col[b]), &w.w4[b], 4);
  }
}

// Builds the expanded form; false where its value offsets would not fit (the caller drops it).
bool BuildExpanded(Packed* p) {
  const int64_t groups = (p->n + kRowGroup - 1) / kRowGroup;
  p->x_chunks = ExpandedChunks(*p);
  p->x_mask.assign(groups * p->x_chunks * 16, 0);
  p->x_pre.assign(groups * p->x_chunks * 16, 0);
  p->x_base.assign(groups * p->x_chunks, 0);
  p->x_vals.clear();
  std::vector<int8_t> rows[16];
  for (int64_t g = 0; g < groups; ++g) {
    for (int r = 0; r < 16; ++r) GroupRow(*p, g, r, &rows[r]);
    for (int64_t c = 0; c < p->x_chunks; ++c) {
      const int64_t gc = g * p->x_chunks + c;
      if (p->x_vals.size() > UINT32_MAX - kChunkBytes) return false;
      p->x_base[gc] = static_cast<uint32_t>(p->x_vals.size());
      for (int r = 0; r < 16; ++r) {
        p->x_pre[gc * 16 + r] = static_cast<uint16_t>(p->x_vals.size() - p->x_base[gc]);
        for (int j = 0; j < 64; ++j) {
          const int8_t v = rows[r][c * 64 + j];
          if (v != 0) p->x_mask[gc * 16 + r] |= uint64_t{1} << j, p->x_vals.push_back(v);
        }
      }
    }
  }
  return true;
}

void DropExpanded(Packed* p) {
  p->expanded = false, p->x_chunks = 0;
  p->x_mask.clear(), p->x_pre.clear(), p->x_base.clear(), p->x_vals.clear();
}

// Groups [n0, n1) / 16 in the expanded form: one ring of A tiles runs through them all, and
// each group's epilogue runs during the next group's products (two accumulator buffers).
template <int G>
TGT_XAMX void RowsExpanded(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
                           int32_t a_zp, const Epilogue& ep, void* out) {
  alignas(64) int32_t tmp[2][kRowGroup * kT512];
  PendingEpilogue pending;
  pending.mv = mv, pending.a_zp = a_zp, pending.ep = &ep, pending.out = out;
  ExpandRing ring;
  const int64_t first = n0 / kRowGroup * w.x_chunks;
  ring.end = (n1 + kRowGroup - 1) / kRowGroup * w.x_chunks;
  for (int64_t i = first; i < std::min(first + kAhead, ring.end); ++i) {
    ExpandChunk(w, i, ring.a[i % kRing]);
  }
  for (int64_t ng = n0; ng < n1; ng += kRowGroup) {
    int32_t* sums = tmp[(ng / kRowGroup) & 1];
    GroupExpanded<G>(w, ng / kRowGroup, ap, &ring, &pending, sums);
    pending.tmp = sums, pending.ng = ng, pending.nv = std::min<int64_t>(kRowGroup, n1 - ng);
    pending.next = 0, pending.groups = (mv + 15) / 16;
  }
  while (pending.next < pending.groups) EpilogueStep(w, &pending);
}

template <int G>
TGT_AMX void RowsAmx(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
                     int32_t a_zp, const Epilogue& ep, void* out) {
  if (w.expanded) return RowsExpanded<G>(w, ap, mv, n0, n1, a_zp, ep, out);
  alignas(64) int32_t tmp[kRowGroup * kT512];
  for (int64_t ng = n0; ng < n1; ng += kRowGroup) {
    GroupAmx<G>(w, ng / kRowGroup, ap, tmp);
    Epilogue512(w, tmp, mv, ng, std::min<int64_t>(kRowGroup, n1 - ng), a_zp, ep, out);
  }
}

}  // namespace

void PlanAmx(Isa isa, Packed* w) {
  // chunk_off holds kb * 256 in an int32 (a K past 33M would not fit; nothing is that wide)
  if (isa != kAmx || w->n == 0 || w->kb > INT32_MAX / kColumnBytes) return;
  Packed& p = *w;
  const int64_t groups = (p.n + kRowGroup - 1) / kRowGroup;
  std::vector<std::vector<int32_t>> cols(groups);  // each group's kept block columns
  int64_t union_chunks = 0;
  for (int64_t g = 0; g < groups; ++g) {
    cols[g] = GroupColumns(p, g * kRowGroup, std::min(p.n, (g + 1) * kRowGroup));
    union_chunks += (static_cast<int64_t>(cols[g].size()) + kChunk - 1) / kChunk;
  }
  const double form_cost = FormCost(isa, p), union_cost = kChunkCost * union_chunks;
  const double expanded_cost =
      kExpandedChunkCost * static_cast<double>(groups * ExpandedChunks(p));
  // every AMX CPU has AVX512-VBMI2 (vpexpandb); checked all the same
  p.expanded = expanded_cost < std::min(form_cost, union_cost) &&
               __builtin_cpu_supports("avx512vbmi2") && BuildExpanded(&p);
  if (!p.expanded) DropExpanded(&p);
  p.amx = p.expanded || union_cost < form_cost;
  if (!p.amx) return;
  if (!p.expanded) {  // only the chosen form is built (a dense weight's would be 1 KB a chunk)
    p.chunk_ptr.assign(1, 0), p.chunk_off.clear(), p.chunk_dense.clear(), p.chunk_w.clear();
    for (int64_t g = 0; g < groups; ++g) AppendGroup(cols[g], g, &p);
  }
  p.quad = false;  // the tiles read the block layout
  p.quad_ptr.clear(), p.quad_off.clear(), p.quad_w4.clear();
}

const char* FormName(const Packed& w) {
  return w.expanded ? "amx-expanded" : w.amx ? "amx" : w.quad ? "quads" : "blocks";
}

TGT_AMX void TileAmx(const Packed& w, const uint8_t* ap, int64_t mv, int64_t n0, int64_t n1,
                     int32_t a_zp, const Epilogue& ep, void* out) {
  ConfigureLinearTiles();
  switch ((mv + 15) / 16) {
    case 1: RowsAmx<1>(w, ap, mv, n0, n1, a_zp, ep, out); break;
    case 2: RowsAmx<2>(w, ap, mv, n0, n1, a_zp, ep, out); break;
    case 3: RowsAmx<3>(w, ap, mv, n0, n1, a_zp, ep, out); break;
    default: RowsAmx<4>(w, ap, mv, n0, n1, a_zp, ep, out); break;
  }
}

}  // namespace st
