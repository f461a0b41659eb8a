// The ONNX Runtime custom-op library: the fifteen ops of ../spec.py in domain com.sparse_transfer
// (version 1), registered by RegisterCustomOps (SessionOptions.register_custom_ops_library).
// Weights (constant initializers) are packed once when ORT creates the kernel; activations are
// quantized/repacked per call; work is split with KernelContext_ParallelFor, so the session's
// intra-op thread count is respected.
#include <sched.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kernels.h"
#include "ort_abi.h"

namespace {

OrtFns g_ort;
st::Isa g_isa = st::kScalar;
constexpr const char* kDomain = "com.sparse_transfer";

struct OpDef {
  OrtCustomOp base;  // first member: ORT hands back a pointer to it
  const char* name;
  bool qlinear;  // SparseQLinear* (else SparseMatMulInteger or Int8Attention)
  bool in_u8, out_u8;
  bool attention;  // Int8Attention
  bool layernorm;  // ResidualLayerNorm*: out_u8 adds the quantized second output
  bool linear_norm;  // SparseQLinear*LayerNorm*: a Linear, its residual and LayerNorm in one
  int parts;  // SparseQLinearU8x3: 3 (the weight's rows in three equal outputs), else 1
  bool embeddings;  // EmbeddingsLayerNormToU8 (also `layernorm`: its epsilon and outputs)
};

constexpr int kMaxParts = 3;

const OpDef* Def(const OrtCustomOp* op) { return reinterpret_cast<const OpDef*>(op); }

// Int8Attention's inputs: q, q_zp, k, k_zp, v, v_zp, mask, qk_scale, score_mul, p_scale, p_zp,
// pv_scale (spec.py); Int8AttentionToU8 adds y_scale (float) and y_zero_point (uint8).
constexpr int kAttentionTypes[] = {kTypeUint8, kTypeUint8, kTypeUint8, kTypeUint8,
                                   kTypeUint8, kTypeUint8, kTypeFloat, kTypeFloat,
                                   kTypeFloat, kTypeFloat, kTypeUint8, kTypeFloat};

// ResidualLayerNorm's inputs: x, residual, gamma, beta [, y_scale, y_zero_point].
constexpr int kLayerNormTypes[] = {kTypeFloat, kTypeFloat, kTypeFloat,
                                   kTypeFloat, kTypeFloat, kTypeUint8};

// EmbeddingsLayerNormToU8's inputs: input_ids, token_type_ids, position_ids, then per table
// (word, type, position) codes, scale, zero point; gamma, beta, y_scale, y_zero_point.
constexpr int kEmbeddingTypes[] = {kTypeInt64, kTypeInt64, kTypeInt64, kTypeUint8, kTypeFloat,
                                   kTypeUint8, kTypeUint8, kTypeFloat, kTypeUint8, kTypeUint8,
                                   kTypeFloat, kTypeUint8, kTypeFloat, kTypeFloat, kTypeFloat,
                                   kTypeUint8};

size_t InputCount(const OpDef* d) {
  if (d->embeddings) return sizeof(kEmbeddingTypes) / sizeof(int);
  if (d->attention) return sizeof(kAttentionTypes) / sizeof(int) + (d->out_u8 ? 2 : 0);
  if (d->layernorm) return d->out_u8 ? 6 : 4;
  if (d->linear_norm) return d->out_u8 ? 13 : 11;  // the Linear's 8, then LayerNorm's tail
  return d->qlinear ? (d->out_u8 ? 8 + 2 * d->parts : 8) : 5;
}

int InputType(const OpDef* d, size_t i) {
  if (d->embeddings) return kEmbeddingTypes[i];
  if (d->attention) return i < 12 ? kAttentionTypes[i] : (i == 12 ? kTypeFloat : kTypeUint8);
  if (d->layernorm) return kLayerNormTypes[i];
  if (d->linear_norm && i >= 8) return kLayerNormTypes[i - 7];  // residual, gamma, ... y_zp
  if (!d->qlinear) {
    static const int types[] = {kTypeUint8, kTypeUint8, kTypeInt32, kTypeInt32, kTypeInt8};
    return types[i];
  }
  static const int types[] = {kTypeFloat, kTypeFloat, kTypeUint8, kTypeInt32, kTypeInt32,
                              kTypeInt8,  kTypeFloat, kTypeFloat, kTypeFloat, kTypeUint8};
  if (i >= 8) return i % 2 == 0 ? kTypeFloat : kTypeUint8;  // each output's y_scale, y_zp
  return i == 0 && d->in_u8 ? kTypeUint8 : types[i];
}

OrtStatus* Error(const std::string& message) {
  return g_ort.CreateStatus(kOrtInvalidArgument, message.c_str());
}

#define ST_RETURN_IF(expr)             \
  do {                                 \
    OrtStatus* _status = (expr);       \
    if (_status != nullptr) return _status; \
  } while (0)

// A tensor's element type, shape and data.
struct View {
  int type = 0;
  std::vector<int64_t> dims;
  void* data = nullptr;
  int64_t size() const {
    int64_t s = 1;
    for (int64_t d : dims) s *= d;
    return s;
  }
};

OrtStatus* Inspect(const OrtValue* value, View* v) {
  OrtTensorTypeAndShapeInfo* info = nullptr;
  ST_RETURN_IF(g_ort.GetTensorTypeAndShape(value, &info));
  size_t rank = 0;
  OrtStatus* s = g_ort.GetTensorElementType(info, &v->type);
  if (s == nullptr) s = g_ort.GetDimensionsCount(info, &rank);
  if (s == nullptr) {
    v->dims.resize(rank);
    s = g_ort.GetDimensions(info, v->dims.data(), rank);
  }
  g_ort.ReleaseTensorTypeAndShapeInfo(info);
  if (s != nullptr) return s;
  return g_ort.GetTensorMutableData(const_cast<OrtValue*>(value), &v->data);
}

OrtStatus* Pack(const View& row_ptr, const View& col, const View& values, int64_t k,
                st::Packed* out) {
  std::string error;
  if (row_ptr.dims.size() != 1 || col.dims.size() != 1) {
    return Error("row_ptr and block_col must be 1-D int32 tensors");
  }
  if (!st::PackWeight(static_cast<const int32_t*>(row_ptr.data), row_ptr.size(),
                      static_cast<const int32_t*>(col.data), col.size(),
                      static_cast<const int8_t*>(values.data), values.size(), k, out, &error)) {
    return Error(error);
  }
  return nullptr;
}

// The quads (scattered weights) or the AMX tiles (16-row groups sharing blocks, or expanded
// chunks of any weight), where cheaper.
void PlanForms(st::Isa isa, st::Packed* w) {
  st::PlanQuads(isa, w);
  st::PlanAmx(isa, w);
}

struct Kernel {
  const OpDef* def = nullptr;
  st::Isa isa = st::kScalar;  // the path chosen when the library was registered
  int64_t k = 0;
  int64_t head_dim = 0;  // Int8Attention
  float epsilon = 0.f;    // ResidualLayerNorm
  bool gelu = false;
  std::unique_ptr<st::Packed> packed;  // when the weight inputs are constant initializers
  // SparseQLinear*: the epilogue's x_scale * w_scale[n] then bias[n] (each N padded to 16),
  // built once when x_scale, w_scale and bias are constant initializers (EpilogueArrays)
  std::vector<float> epilogue;
};

size_t WeightInput(const OpDef* d) { return d->qlinear ? 3 : 2; }

OrtStatus* ReadAttributes(const OrtKernelInfo* info, Kernel* kernel) {
  if (kernel->def->layernorm || kernel->def->linear_norm) {
    if (g_ort.KernelInfoGetAttribute_float(info, "epsilon", &kernel->epsilon) != nullptr ||
        !std::isfinite(kernel->epsilon) || kernel->epsilon < 0) {
      return Error(std::string(kernel->def->name) +
                   ": the float attribute epsilon (finite, >= 0) is required");
    }
    if (!kernel->def->linear_norm) return nullptr;
  }
  if (kernel->def->attention) {
    if (g_ort.KernelInfoGetAttribute_int64(info, "head_dim", &kernel->head_dim) != nullptr ||
        kernel->head_dim <= 0) {
      return Error("Int8Attention: the int attribute head_dim (> 0) is required");
    }
    return nullptr;
  }
  if (g_ort.KernelInfoGetAttribute_int64(info, "K", &kernel->k) != nullptr) {
    return Error(std::string(kernel->def->name) +
                 ": the int attribute K (input width) is required");
  }
  if (kernel->k <= 0) return Error("attribute K must be positive");
  if (!kernel->def->qlinear) return nullptr;
  size_t size = 0;  // a null buffer asks for the size (terminator included)
  OrtStatus* s = g_ort.KernelInfoGetAttribute_string(info, "activation", nullptr, &size);
  if (s != nullptr) {  // absent: "none"
    g_ort.ReleaseStatus(s);
    return nullptr;
  }
  std::string act(size, '\0');
  ST_RETURN_IF(g_ort.KernelInfoGetAttribute_string(info, "activation", act.data(), &size));
  act.resize(std::strlen(act.c_str()));
  if (act == "gelu" && kernel->def->linear_norm) {
    return Error(std::string(kernel->def->name) + ": attribute activation must be none");
  } else if (act == "gelu") {
    kernel->gelu = true;
  } else if (act != "none") {
    return Error("attribute activation: '" + act + "', choose none or gelu");
  }
  return nullptr;
}

// Input `index` when it is a constant initializer (false: fed at run time, or unreadable).
bool ConstantInput(const OrtKernelInfo* info, size_t index, View* view) {
  int is_constant = 0;
  const OrtValue* value = nullptr;
  OrtStatus* s = g_ort.KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value);
  if (s == nullptr && (!is_constant || value == nullptr)) return false;
  if (s == nullptr) s = Inspect(value, view);
  if (s == nullptr) return true;
  g_ort.ReleaseStatus(s);
  return false;
}

OrtStatus* PackConstantWeights(const OrtKernelInfo* info, Kernel* kernel) {
  View views[3];
  for (size_t i = 0; i < 3; ++i) {
    if (!ConstantInput(info, WeightInput(kernel->def) + i, &views[i])) {
      return nullptr;  // not constant: packed per call
    }
  }
  auto packed = std::make_unique<st::Packed>();
  ST_RETURN_IF(Pack(views[0], views[1], views[2], kernel->k, packed.get()));
  PlanForms(kernel->isa, packed.get());
  kernel->packed = std::move(packed);
  return nullptr;
}

bool Finite(float v) { return std::isfinite(v); }

// The epilogue reads its per-row arrays a whole row group at a time.
int64_t PaddedRows(int64_t n) { return (n + st::kRowGroup - 1) / st::kRowGroup * st::kRowGroup; }

// The epilogue's per-row arrays: x_scale * w_scale[n] (padded to 16 rows), then bias[n].
// False (nothing built) when a value is not finite.
bool EpilogueArrays(const float* w_scale, const float* bias, int64_t n, float x_scale,
                    std::vector<float>* out) {
  const int64_t padded = PaddedRows(n);
  out->assign(2 * padded, 0.f);
  for (int64_t i = 0; i < n; ++i) {
    if (!Finite(w_scale[i]) || !Finite(bias[i])) return false;
    (*out)[i] = x_scale * w_scale[i];
    (*out)[padded + i] = bias[i];
  }
  return true;
}

// Builds Kernel::epilogue once when x_scale, w_scale and bias are constant initializers (what
// export-onnx writes) and valid; otherwise every call reads and checks them (ReadEpilogue),
// which also words the errors. Per call it had been a serial loop over N at every Linear.
void CacheConstantEpilogue(const OrtKernelInfo* info, Kernel* kernel) {
  View x_scale, w_scale, bias;
  if (!kernel->def->qlinear || !kernel->packed || !ConstantInput(info, 1, &x_scale) ||
      !ConstantInput(info, 6, &w_scale) || !ConstantInput(info, 7, &bias)) {
    return;
  }
  const int64_t n = kernel->packed->n;
  if (x_scale.size() != 1 || w_scale.size() != n || bias.size() != n) return;
  const float xs = *static_cast<const float*>(x_scale.data);
  if (!Finite(xs) || xs <= 0) return;
  std::vector<float> arrays;
  if (EpilogueArrays(static_cast<const float*>(w_scale.data),
                     static_cast<const float*>(bias.data), n, xs, &arrays)) {
    kernel->epilogue = std::move(arrays);
  }
}

OrtStatus* CreateKernelV2(const OrtCustomOp* op, const OrtApi*, const OrtKernelInfo* info,
                          void** out) {
  try {  // no C++ exception may cross into ORT
    auto kernel = std::make_unique<Kernel>();
    kernel->def = Def(op);
    kernel->isa = g_isa;
    ST_RETURN_IF(ReadAttributes(info, kernel.get()));
    if (!kernel->def->attention && !kernel->def->layernorm) {
      ST_RETURN_IF(PackConstantWeights(info, kernel.get()));
      CacheConstantEpilogue(info, kernel.get());
    }
    *out = kernel.release();
    return nullptr;
  } catch (const std::exception& e) {
    return g_ort.CreateStatus(kOrtFail, e.what());
  }
}

// One call's work, shared by the ParallelFor tasks.
struct Job {
  st::Isa isa;
  const st::Packed* w;
  int64_t m, k, tiles, chunks, chunk_rows;
  int tile_tokens;
  bool float_in;
  const void* x;
  float x_scale;
  int32_t zp;
  uint8_t* ap;
  size_t tile_bytes;
  // Output rows [p * part_n, (p + 1) * part_n) go to out[p] through ep[p], p < parts (one part
  // but for SparseQLinearU8x3); part_chunks row chunks per part.
  int64_t parts, part_n, part_chunks;
  st::Epilogue ep[kMaxParts];
  void* out[kMaxParts];
  size_t out_elem;
  st::LayerNormArgs norm;  // SparseQLinear*LayerNorm*: over the tile's rows of `out`
};

void RepackTask(void* data, size_t i) {
  const Job& j = *static_cast<Job*>(data);
  uint8_t* dst = j.ap + i * j.tile_bytes;
  if (j.float_in) {
    st::RepackF32(j.isa, static_cast<const float*>(j.x), j.m, j.k, j.x_scale, j.zp, i, dst);
  } else {
    st::RepackU8(j.isa, static_cast<const uint8_t*>(j.x), j.m, j.k, i, dst);
  }
  if (j.w->quad) st::BlocksToQuadLayout(j.isa, j.w->kb, dst);
}

void ComputeTask(void* data, size_t i) {
  const Job& j = *static_cast<Job*>(data);
  // Row chunks vary fastest: the tasks in flight share one activation tile (in L2) and
  // stream the packed weights, instead of re-reading every tile once per chunk.
  const int64_t tile = static_cast<int64_t>(i) / j.chunks;
  const int64_t chunk = static_cast<int64_t>(i) % j.chunks;  // the tile's chunks, part by part
  const int64_t part = chunk / j.part_chunks, first = part * j.part_n;
  const int64_t n0 = first + chunk % j.part_chunks * j.chunk_rows;
  const int64_t n1 = std::min(first + j.part_n, n0 + j.chunk_rows);
  const int64_t m0 = tile * j.tile_tokens, mv = std::min<int64_t>(j.tile_tokens, j.m - m0);
  char* out = static_cast<char*>(j.out[part]) + static_cast<size_t>(m0 * j.part_n) * j.out_elem;
  st::RunTile(j.isa, *j.w, j.ap + tile * j.tile_bytes, mv, n0, n1, j.zp, j.ep[part], out);
}

// SparseQLinear*LayerNorm*: one tile's tokens through the Linear (every output row chunk),
// then their residual LayerNorm in place while the rows are still in cache: the float
// Linear output never makes the round trip through memory that the two-op form pays. One task
// per tile leaves cores idle when there are fewer tiles than cores (batch 1 on a big host);
// then the op runs as the two ops did, the LayerNorm over blocks of kNormRows rows after.
int64_t UsableCores() {  // this process's CPU set (taskset, cgroup cpusets), not the host's
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}
const int64_t g_cores = UsableCores();
constexpr int64_t kNormRows = 16;

void NormRowsTask(void* data, size_t i) {
  const Job& j = *static_cast<Job*>(data);
  const int64_t r0 = static_cast<int64_t>(i) * kNormRows;
  st::LayerNormRows(j.isa, j.norm, r0, std::min(j.m, r0 + kNormRows));
}

void LinearNormTask(void* data, size_t i) {
  const Job& j = *static_cast<Job*>(data);
  RepackTask(data, i);
  for (int64_t chunk = 0; chunk < j.chunks; ++chunk) ComputeTask(data, i * j.chunks + chunk);
  const int64_t m0 = static_cast<int64_t>(i) * j.tile_tokens;
  st::LayerNormRows(j.isa, j.norm, m0, std::min<int64_t>(j.m, m0 + j.tile_tokens));
}

OrtStatus* Scalar(OrtKernelContext* ctx, size_t index, const char* name, View* v) {
  const OrtValue* value = nullptr;
  ST_RETURN_IF(g_ort.KernelContext_GetInput(ctx, index, &value));
  ST_RETURN_IF(Inspect(value, v));
  if (v->size() != 1) return Error(std::string(name) + " must hold one value (per-tensor)");
  return nullptr;
}

// A uint8 output's QuantizeLinear: scale (finite, > 0) at input `index`, zero point after it.
OrtStatus* ReadOutputQuant(OrtKernelContext* ctx, size_t index, float* scale, int32_t* zp) {
  View ys, yzp;
  ST_RETURN_IF(Scalar(ctx, index, "y_scale", &ys));
  ST_RETURN_IF(Scalar(ctx, index + 1, "y_zero_point", &yzp));
  *scale = *static_cast<const float*>(ys.data);
  *zp = *static_cast<const uint8_t*>(yzp.data);
  if (!Finite(*scale) || *scale <= 0) return Error("y_scale must be finite and > 0");
  return nullptr;
}

OrtStatus* Compute(Kernel* kernel, OrtKernelContext* ctx, Job* job, std::vector<float>* buf);
OrtStatus* ComputeEmbeddings(const Kernel* kernel, OrtKernelContext* ctx);
OrtStatus* RunJob(OrtKernelContext* ctx, const OpDef* d, Job* job);
OrtStatus* ReadNormTail(const Kernel* kernel, OrtKernelContext* ctx,
                        const std::vector<int64_t>& dims, st::LayerNormArgs* a);
OrtStatus* ComputeAttention(const Kernel* kernel, OrtKernelContext* ctx);
OrtStatus* ComputeLayerNorm(const Kernel* kernel, OrtKernelContext* ctx);

OrtStatus* KernelComputeV2(void* op_kernel, OrtKernelContext* ctx) {
  try {
    Kernel* kernel = static_cast<Kernel*>(op_kernel);
    if (kernel->def->attention) return ComputeAttention(kernel, ctx);
    if (kernel->def->embeddings) return ComputeEmbeddings(kernel, ctx);
    if (kernel->def->layernorm) return ComputeLayerNorm(kernel, ctx);
    Job job{};
    std::vector<float> buf;
    return Compute(kernel, ctx, &job, &buf);
  } catch (const std::exception& e) {
    return g_ort.CreateStatus(kOrtFail, e.what());
  }
}

// Each part's epilogue (job->part_n set): int32 out, or the scales, bias, GELU and uint8 output.
OrtStatus* ReadEpilogue(const Kernel* kernel, OrtKernelContext* ctx, int64_t n, float x_scale,
                        Job* job, std::vector<float>* buf) {
  const OpDef* d = kernel->def;
  for (int64_t p = 0; p < job->parts; ++p) {
    job->ep[p].kind = st::kOutI32;
    job->ep[p].out_cols = job->part_n, job->ep[p].first_col = p * job->part_n;
  }
  if (!d->qlinear) return nullptr;
  const std::vector<float>* arrays = &kernel->epilogue;
  if (arrays->empty()) {  // not constant initializers: read and checked on every call
    View ws, bias;
    const OrtValue* value = nullptr;
    ST_RETURN_IF(g_ort.KernelContext_GetInput(ctx, 6, &value));
    ST_RETURN_IF(Inspect(value, &ws));
    ST_RETURN_IF(g_ort.KernelContext_GetInput(ctx, 7, &value));
    ST_RETURN_IF(Inspect(value, &bias));
    if (ws.size() != n || bias.size() != n) {
      return Error("w_scale and bias must hold N = " + std::to_string(n) + " values");
    }
    if (!EpilogueArrays(static_cast<const float*>(ws.data), static_cast<const float*>(bias.data),
                        n, x_scale, buf)) {
      return Error("w_scale and bias must be finite");
    }
    arrays = buf;
  }
  const int64_t padded = PaddedRows(n);
  const bool out_u8 = d->out_u8 && !d->linear_norm;  // a fused LayerNorm quantizes, not this
  for (int64_t p = 0; p < job->parts; ++p) {
    st::Epilogue& ep = job->ep[p];
    ep.kind = out_u8 ? st::kOutU8 : st::kOutF32;
    ep.scale = arrays->data(), ep.bias = arrays->data() + padded, ep.gelu = kernel->gelu;
    if (out_u8) ST_RETURN_IF(ReadOutputQuant(ctx, 8 + 2 * p, &ep.y_scale, &ep.y_zp));
  }
  return nullptr;
}

// SparseQLinearU8x3: the weight's N rows in d->parts equal outputs, each a multiple of 16
// rows (the kernels' row groups never straddle two outputs).
OrtStatus* SplitParts(const OpDef* d, int64_t n, Job* job) {
  job->parts = d->parts, job->part_n = n / d->parts;
  if (d->parts == 1 || (n % d->parts == 0 && job->part_n % st::kRowGroup == 0)) return nullptr;
  return Error(std::string(d->name) + ": the weight's N = " + std::to_string(n) + " must be " +
               std::to_string(d->parts) + " equal parts of a multiple of " +
               std::to_string(st::kRowGroup) + " rows");
}

OrtStatus* Compute(Kernel* kernel, OrtKernelContext* ctx, Job* job, std::vector<float>* buf) {
  const OpDef* d = kernel->def;
  const OrtValue* value = nullptr;
  View x;
  ST_RETURN_IF(g_ort.KernelContext_GetInput(ctx, 0, &value));
  ST_RETURN_IF(Inspect(value, &x));
  if (x.dims.empty() || x.dims.back() != kernel->k) {
    return Error(std::string(d->name) + ": the input's last dimension must be K = " +
                 std::to_string(kernel->k));
  }
  st::Packed local;
  const st::Packed* w = kernel->packed.get();
  if (w == nullptr) {  // weights fed at run time: pack for this call
    View parts[3];
    for (size_t i = 0; i < 3; ++i) {
      ST_RETURN_IF(g_ort.KernelContext_GetInput(ctx, WeightInput(d) + i, &value));
      ST_RETURN_IF(Inspect(value, &parts[i]));
    }
    ST_RETURN_IF(Pack(parts[0], parts[1], parts[2], kernel->k, &local));
    PlanForms(kernel->isa, &local);
    w = &local;
  }
  View scale, zp;
  float x_scale = 1.f;
  if (d->qlinear) {
    ST_RETURN_IF(Scalar(ctx, 1, "x_scale", &scale));
    x_scale = *static_cast<const float*>(scale.data);
    if (!Finite(x_scale) || x_scale <= 0) return Error("x_scale must be finite and > 0");
  }
  ST_RETURN_IF(Scalar(ctx, d->qlinear ? 2 : 1, "the activation zero point", &zp));
  ST_RETURN_IF(SplitParts(d, w->n, job));
  ST_RETURN_IF(ReadEpilogue(kernel, ctx, w->n, x_scale, job, buf));
  std::vector<int64_t> out_dims(x.dims);
  out_dims.back() = job->part_n;
  OrtValue* out[kMaxParts] = {};
  for (int64_t p = 0; p < job->parts; ++p) {
    ST_RETURN_IF(
        g_ort.KernelContext_GetOutput(ctx, p, out_dims.data(), out_dims.size(), &out[p]));
  }
  const int64_t m = x.size() / kernel->k;
  if (d->linear_norm) ST_RETURN_IF(ReadNormTail(kernel, ctx, out_dims, &job->norm));
  if (m == 0 || w->n == 0) return nullptr;
  for (int64_t p = 0; p < job->parts; ++p) {
    ST_RETURN_IF(g_ort.GetTensorMutableData(out[p], &job->out[p]));
  }
  job->norm.x = job->norm.y = static_cast<float*>(job->out[0]);

  job->isa = kernel->isa, job->w = w, job->m = m, job->k = kernel->k;
  job->float_in = !d->in_u8 && d->qlinear;
  job->x = x.data, job->x_scale = x_scale;
  job->zp = *static_cast<const uint8_t*>(zp.data);
  return RunJob(ctx, d, job);
}

// Splits a prepared job over ORT's pool: activations repacked per token tile, then tiles x
// 64-row chunks (and, for a fused LayerNorm, the rows normalised after, or per tile).
OrtStatus* RunJob(OrtKernelContext* ctx, const OpDef* d, Job* job) {
  const st::Packed* w = job->w;
  job->tile_tokens = st::TileTokens(job->isa);
  job->tiles = (job->m + job->tile_tokens - 1) / job->tile_tokens;
  job->chunk_rows = 64;
  job->part_chunks = (job->part_n + job->chunk_rows - 1) / job->chunk_rows;
  job->chunks = job->parts * job->part_chunks;
  job->tile_bytes = static_cast<size_t>(w->kb) * job->tile_tokens * 4;
  job->out_elem = job->ep[0].kind == st::kOutU8 ? 1 : 4;
  const size_t slack = w->expanded ? st::kTileSlackBytes : 0;  // see RunTile
  const size_t bytes = job->tile_bytes * job->tiles + slack;
  std::unique_ptr<uint8_t, decltype(&std::free)> ap(
      static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)), &std::free);
  if (!ap) return g_ort.CreateStatus(kOrtFail, "out of memory for the repacked activations");
  job->ap = ap.get();
  std::memset(job->ap + job->tile_bytes * job->tiles, 0, slack);
  if (d->linear_norm && job->tiles >= g_cores) {
    return g_ort.KernelContext_ParallelFor(ctx, LinearNormTask, job->tiles, 0, job);
  }
  ST_RETURN_IF(g_ort.KernelContext_ParallelFor(ctx, RepackTask, job->tiles, 0, job));
  ST_RETURN_IF(
      g_ort.KernelContext_ParallelFor(ctx, ComputeTask, job->tiles * job->chunks, 0, job));
  if (!d->linear_norm) return nullptr;
  const int64_t blocks = (job->m + kNormRows - 1) / kNormRows;  // fewer tiles than cores: 2 ops
  return g_ort.KernelContext_ParallelFor(ctx, NormRowsTask, blocks, 0, job);
}

// ---------------------------------------------------------------------------- Int8Attention

struct AttentionJob {
  st::Isa isa;
  st::AttentionArgs args;
};

void AttentionTask(void* data, size_t bh) {
  const AttentionJob& j = *static_cast<AttentionJob*>(data);
  st::AttentionHead(j.isa, j.args, static_cast<int64_t>(bh));
}

OrtStatus* Input(OrtKernelContext* ctx, size_t index, View* v) {
  const OrtValue* value = nullptr;
  ST_RETURN_IF(g_ort.KernelContext_GetInput(ctx, index, &value));
  return Inspect(value, v);
}

// The scalar inputs: zero points (k and v must be 128: int8 stored as uint8) and scales.
OrtStatus* ReadAttentionScalars(OrtKernelContext* ctx, st::AttentionArgs* a) {
  View v;
  const char* u8_names[] = {"q_zero_point", "k_zero_point", "v_zero_point", "p_zero_point"};
  const size_t u8_inputs[] = {1, 3, 5, 10};
  int32_t zp[4];
  for (int i = 0; i < 4; ++i) {
    ST_RETURN_IF(Scalar(ctx, u8_inputs[i], u8_names[i], &v));
    zp[i] = *static_cast<const uint8_t*>(v.data);
  }
  if (zp[1] != 128 || zp[2] != 128) {
    return Error("Int8Attention: k_zero_point and v_zero_point must be 128 (int8 in uint8)");
  }
  a->q_zp = zp[0], a->p_zp = zp[3];
  const char* f_names[] = {"qk_scale", "score_mul", "p_scale", "pv_scale"};
  const size_t f_inputs[] = {7, 8, 9, 11};
  float* f_out[] = {&a->qk_scale, &a->score_mul, &a->p_scale, &a->pv_scale};
  for (int i = 0; i < 4; ++i) {
    ST_RETURN_IF(Scalar(ctx, f_inputs[i], f_names[i], &v));
    *f_out[i] = *static_cast<const float*>(v.data);
    if (!Finite(*f_out[i])) return Error(std::string(f_names[i]) + " must be finite");
  }
  if (a->p_scale <= 0) return Error("p_scale must be > 0");
  return nullptr;
}

OrtStatus* ComputeAttention(const Kernel* kernel, OrtKernelContext* ctx) {
  View q, k, v, mask;
  ST_RETURN_IF(Input(ctx, 0, &q));
  ST_RETURN_IF(Input(ctx, 2, &k));
  ST_RETURN_IF(Input(ctx, 4, &v));
  ST_RETURN_IF(Input(ctx, 6, &mask));
  if (q.dims.size() != 3 || k.dims != q.dims || v.dims != q.dims) {
    return Error("Int8Attention: q, k and v must share one shape [batch, seq, heads * head_dim]");
  }
  const int64_t batch = q.dims[0], seq = q.dims[1], width = q.dims[2];
  if (width % kernel->head_dim != 0) {
    return Error("Int8Attention: the last dimension " + std::to_string(width) +
                 " is not a multiple of head_dim " + std::to_string(kernel->head_dim));
  }
  const bool mask_ok = mask.dims.size() == 4 && mask.dims[0] == batch && mask.dims[1] == 1 &&
                       mask.dims[2] == 1 && mask.dims[3] == seq;
  if (!mask_ok) return Error("Int8Attention: mask must have shape [batch, 1, 1, seq]");
  AttentionJob job{kernel->isa, {}};
  st::AttentionArgs& a = job.args;
  ST_RETURN_IF(ReadAttentionScalars(ctx, &a));
  if (kernel->def->out_u8) ST_RETURN_IF(ReadOutputQuant(ctx, 12, &a.y_scale, &a.y_zp));
  a.q = static_cast<const uint8_t*>(q.data), a.k = static_cast<const uint8_t*>(k.data);
  a.v = static_cast<const uint8_t*>(v.data), a.mask = static_cast<const float*>(mask.data);
  a.batch = batch, a.seq = seq, a.head_dim = kernel->head_dim, a.heads = width / a.head_dim;
  OrtValue* out = nullptr;
  ST_RETURN_IF(g_ort.KernelContext_GetOutput(ctx, 0, q.dims.data(), q.dims.size(), &out));
  if (q.size() == 0) return nullptr;
  void* data = nullptr;
  ST_RETURN_IF(g_ort.GetTensorMutableData(out, &data));
  if (kernel->def->out_u8) {
    a.out_u8 = static_cast<uint8_t*>(data);
  } else {
    a.out = static_cast<float*>(data);
  }
  return g_ort.KernelContext_ParallelFor(ctx, AttentionTask, batch * a.heads, 0, &job);
}

// ------------------------------------------------------------------------ ResidualLayerNorm

// A row-wise op's work (LayerNorm, embeddings), `rows_per_task` rows a ParallelFor task.
template <typename Args>
struct RowJob {
  st::Isa isa;
  Args args;
  int64_t rows_per_task;
};

int64_t RowCount(const st::LayerNormArgs& a) { return a.rows; }
int64_t RowCount(const st::EmbeddingArgs& a) { return a.norm.rows; }

template <typename Args, void (*kRows)(st::Isa, const Args&, int64_t, int64_t)>
void RowsTask(void* data, size_t i) {
  const RowJob<Args>& j = *static_cast<RowJob<Args>*>(data);
  const int64_t r0 = static_cast<int64_t>(i) * j.rows_per_task;
  kRows(j.isa, j.args, r0, std::min(RowCount(j.args), r0 + j.rows_per_task));
}

template <typename Args>
int64_t RowTasks(const RowJob<Args>& job) {
  return (RowCount(job.args) + job.rows_per_task - 1) / job.rows_per_task;
}

OrtStatus* ReadLayerNormInputs(const Kernel* kernel, OrtKernelContext* ctx, View* x,
                               st::LayerNormArgs* a) {
  View res, gamma, beta;
  ST_RETURN_IF(Input(ctx, 0, x));
  ST_RETURN_IF(Input(ctx, 1, &res));
  ST_RETURN_IF(Input(ctx, 2, &gamma));
  ST_RETURN_IF(Input(ctx, 3, &beta));
  if (x->dims.empty() || res.dims != x->dims) {
    return Error("ResidualLayerNorm: x and residual must share one shape");
  }
  a->n = x->dims.back();
  if (gamma.size() != a->n || beta.size() != a->n) {
    return Error("ResidualLayerNorm: gamma and beta must hold the last dimension's " +
                 std::to_string(a->n) + " values");
  }
  a->x = static_cast<const float*>(x->data), a->residual = static_cast<const float*>(res.data);
  a->gamma = static_cast<const float*>(gamma.data), a->beta = static_cast<const float*>(beta.data);
  a->rows = a->n > 0 ? x->size() / a->n : 0, a->epsilon = kernel->epsilon;
  if (!kernel->def->out_u8) return nullptr;
  ST_RETURN_IF(ReadOutputQuant(ctx, 4, &a->y_scale, &a->y_zp));
  return nullptr;
}

// SparseQLinear*LayerNorm*'s inputs after the Linear's eight: residual (the output's shape),
// gamma, beta [, y_scale, y_zero_point] (and the uint8 output); the Linear's float output
// becomes LayerNorm's x and y once the caller has it.
OrtStatus* ReadNormTail(const Kernel* kernel, OrtKernelContext* ctx,
                        const std::vector<int64_t>& dims, st::LayerNormArgs* a) {
  View res, gamma, beta;
  ST_RETURN_IF(Input(ctx, 8, &res));
  ST_RETURN_IF(Input(ctx, 9, &gamma));
  ST_RETURN_IF(Input(ctx, 10, &beta));
  const std::string name = kernel->def->name;
  if (res.dims != dims) return Error(name + ": residual must have the output's shape");
  a->n = dims.back();
  if (gamma.size() != a->n || beta.size() != a->n) {
    return Error(name + ": gamma and beta must hold N = " + std::to_string(a->n) + " values");
  }
  a->residual = static_cast<const float*>(res.data);
  a->gamma = static_cast<const float*>(gamma.data), a->beta = static_cast<const float*>(beta.data);
  a->rows = a->n > 0 ? res.size() / a->n : 0, a->epsilon = kernel->epsilon;
  if (!kernel->def->out_u8) return nullptr;
  ST_RETURN_IF(ReadOutputQuant(ctx, 11, &a->y_scale, &a->y_zp));
  OrtValue* out_q = nullptr;
  void* data = nullptr;
  ST_RETURN_IF(g_ort.KernelContext_GetOutput(ctx, 1, dims.data(), dims.size(), &out_q));
  if (res.size() == 0) return nullptr;
  ST_RETURN_IF(g_ort.GetTensorMutableData(out_q, &data));
  a->yq = static_cast<uint8_t*>(data);
  return nullptr;
}

OrtStatus* ComputeLayerNorm(const Kernel* kernel, OrtKernelContext* ctx) {
  View x;
  RowJob<st::LayerNormArgs> job{kernel->isa, {}, 16};
  st::LayerNormArgs& a = job.args;
  ST_RETURN_IF(ReadLayerNormInputs(kernel, ctx, &x, &a));
  OrtValue* out = nullptr;
  void* data = nullptr;
  ST_RETURN_IF(g_ort.KernelContext_GetOutput(ctx, 0, x.dims.data(), x.dims.size(), &out));
  if (kernel->def->out_u8) {
    OrtValue* out_q = nullptr;
    ST_RETURN_IF(g_ort.KernelContext_GetOutput(ctx, 1, x.dims.data(), x.dims.size(), &out_q));
    if (x.size() > 0) {
      ST_RETURN_IF(g_ort.GetTensorMutableData(out_q, &data));
      a.yq = static_cast<uint8_t*>(data);
    }
  }
  if (a.rows == 0 || a.n == 0) return nullptr;
  ST_RETURN_IF(g_ort.GetTensorMutableData(out, &data));
  a.y = static_cast<float*>(data);
  return g_ort.KernelContext_ParallelFor(ctx, RowsTask<st::LayerNormArgs, st::LayerNormRows>,
                                         RowTasks(job), 0, &job);
}

// ------------------------------------------------------------------ EmbeddingsLayerNormToU8

// One table's codes [rows, n], scale and zero point at `index`, and its ids (every one in
// [-rows, rows), as Gather requires).
OrtStatus* ReadEmbeddingTable(OrtKernelContext* ctx, size_t index, const char* name,
                              const View& ids, int64_t n, st::EmbeddingTable* t) {
  View codes, scale, zp;
  ST_RETURN_IF(Input(ctx, index, &codes));
  ST_RETURN_IF(Scalar(ctx, index + 1, "an embedding table's scale", &scale));
  ST_RETURN_IF(Scalar(ctx, index + 2, "an embedding table's zero point", &zp));
  const std::string op = "EmbeddingsLayerNormToU8: ";
  if (codes.dims.size() != 2 || codes.dims[1] != n) {
    return Error(op + "the " + name + " table must be [rows, " + std::to_string(n) + "]");
  }
  t->codes = static_cast<const uint8_t*>(codes.data), t->rows = codes.dims[0];
  t->scale = *static_cast<const float*>(scale.data);
  t->zp = *static_cast<const uint8_t*>(zp.data);
  if (!Finite(t->scale)) return Error(op + "the " + name + " table's scale must be finite");
  t->ids = static_cast<const int64_t*>(ids.data);
  for (int64_t i = 0; i < ids.size(); ++i) {
    if (t->ids[i] < -t->rows || t->ids[i] >= t->rows) {
      return Error(op + std::string(name) + " id " + std::to_string(t->ids[i]) +
                   " is outside the table's " + std::to_string(t->rows) + " rows");
    }
  }
  return nullptr;
}

OrtStatus* ComputeEmbeddings(const Kernel* kernel, OrtKernelContext* ctx) {
  View ids, types, positions, gamma, beta;
  ST_RETURN_IF(Input(ctx, 0, &ids));
  ST_RETURN_IF(Input(ctx, 1, &types));
  ST_RETURN_IF(Input(ctx, 2, &positions));
  ST_RETURN_IF(Input(ctx, 12, &gamma));
  ST_RETURN_IF(Input(ctx, 13, &beta));
  const int64_t n = gamma.size(), seq = ids.dims.empty() ? 0 : ids.dims.back();
  const bool shared = positions.size() == seq && positions.dims.size() >= 1 &&
                      positions.dims.back() == seq && ids.size() != seq;
  if (ids.dims.empty() || types.dims != ids.dims || (positions.dims != ids.dims && !shared)) {
    return Error("EmbeddingsLayerNormToU8: input_ids and token_type_ids must share one shape, "
                 "and position_ids have it or be one row of the last dimension's ids");
  }
  if (n == 0 || beta.size() != n) {
    return Error("EmbeddingsLayerNormToU8: gamma and beta must hold the hidden size's values");
  }
  RowJob<st::EmbeddingArgs> job{kernel->isa, {}, 16};
  st::EmbeddingArgs& a = job.args;
  ST_RETURN_IF(ReadEmbeddingTable(ctx, 3, "word", ids, n, &a.word));
  ST_RETURN_IF(ReadEmbeddingTable(ctx, 6, "token type", types, n, &a.type));
  ST_RETURN_IF(ReadEmbeddingTable(ctx, 9, "position", positions, n, &a.position));
  a.shared_positions = shared ? seq : 0;
  st::LayerNormArgs& norm = a.norm;
  ST_RETURN_IF(ReadOutputQuant(ctx, 14, &norm.y_scale, &norm.y_zp));
  std::vector<int64_t> dims(ids.dims);
  dims.push_back(n);
  OrtValue* out = nullptr;
  OrtValue* out_q = nullptr;
  ST_RETURN_IF(g_ort.KernelContext_GetOutput(ctx, 0, dims.data(), dims.size(), &out));
  ST_RETURN_IF(g_ort.KernelContext_GetOutput(ctx, 1, dims.data(), dims.size(), &out_q));
  norm.rows = ids.size(), norm.n = n, norm.epsilon = kernel->epsilon;
  if (norm.rows == 0) return nullptr;
  void* data = nullptr;
  ST_RETURN_IF(g_ort.GetTensorMutableData(out, &data));
  norm.x = norm.y = static_cast<float*>(data);
  ST_RETURN_IF(g_ort.GetTensorMutableData(out_q, &data));
  norm.yq = static_cast<uint8_t*>(data);
  norm.gamma = static_cast<const float*>(gamma.data);
  norm.beta = static_cast<const float*>(beta.data);
  return g_ort.KernelContext_ParallelFor(ctx, RowsTask<st::EmbeddingArgs, st::EmbeddingRows>,
                                         RowTasks(job), 0, &job);
}

void KernelDestroy(void* op_kernel) { delete static_cast<Kernel*>(op_kernel); }

// The V1 callbacks: never used by ORT when the V2 ones are set (version >= 16), kept non-null.
void* CreateKernelV1(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info) {
  void* kernel = nullptr;
  OrtStatus* s = CreateKernelV2(op, api, info, &kernel);
  if (s != nullptr) g_ort.ReleaseStatus(s);
  return kernel;
}
void KernelComputeV1(void* op_kernel, OrtKernelContext* ctx) {
  OrtStatus* s = KernelComputeV2(op_kernel, ctx);
  if (s != nullptr) g_ort.ReleaseStatus(s);
}

OpDef MakeOp(const char* name, bool qlinear, bool in_u8, bool out_u8, bool attention = false,
             bool layernorm = false, bool linear_norm = false, int parts = 1,
             bool embeddings = false) {
  OpDef d{};
  d.name = name, d.qlinear = qlinear, d.in_u8 = in_u8, d.out_u8 = out_u8, d.parts = parts;
  d.attention = attention, d.layernorm = layernorm, d.linear_norm = linear_norm;
  d.embeddings = embeddings;
  OrtCustomOp& o = d.base;
  o.version = kOrtApiVersion;
  o.CreateKernel = CreateKernelV1;
  o.GetName = [](const OrtCustomOp* op) { return Def(op)->name; };
  o.GetExecutionProviderType = [](const OrtCustomOp*) -> const char* { return nullptr; };
  o.GetInputType = [](const OrtCustomOp* op, size_t i) { return InputType(Def(op), i); };
  o.GetInputTypeCount = [](const OrtCustomOp* op) { return InputCount(Def(op)); };
  o.GetOutputType = [](const OrtCustomOp* op, size_t i) {
    const OpDef* def = Def(op);
    if (def->attention) return def->out_u8 ? int(kTypeUint8) : int(kTypeFloat);
    if (def->layernorm || def->linear_norm) return i == 0 ? int(kTypeFloat) : int(kTypeUint8);
    return def->qlinear ? (def->out_u8 ? int(kTypeUint8) : int(kTypeFloat)) : int(kTypeInt32);
  };
  o.GetOutputTypeCount = [](const OrtCustomOp* op) -> size_t {
    const OpDef* def = Def(op);
    return (def->layernorm || def->linear_norm) && def->out_u8 ? 2 : def->parts;
  };
  o.KernelCompute = KernelComputeV1;
  o.KernelDestroy = KernelDestroy;
  o.GetInputCharacteristic = [](const OrtCustomOp*, size_t) { return 0; };
  o.GetOutputCharacteristic = [](const OrtCustomOp*, size_t) { return 0; };
  o.GetInputMemoryType = [](const OrtCustomOp*, size_t) { return 0; };
  o.GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  o.GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  o.GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  o.GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  o.CreateKernelV2 = CreateKernelV2;
  o.KernelComputeV2 = KernelComputeV2;
  o.InferOutputShapeFn = nullptr;
  o.GetStartVersion = [](const OrtCustomOp*) { return 1; };
  o.GetEndVersion = [](const OrtCustomOp*) { return INT_MAX; };
  return d;
}

OpDef g_ops[] = {
    MakeOp("SparseMatMulInteger", false, true, false),
    MakeOp("SparseQLinear", true, false, false),
    MakeOp("SparseQLinearToU8", true, false, true),
    MakeOp("SparseQLinearFromU8", true, true, false),
    MakeOp("SparseQLinearU8", true, true, true),
    MakeOp("SparseQLinearU8x3", true, true, true, false, false, false, 3),
    MakeOp("Int8Attention", false, true, false, true),
    MakeOp("Int8AttentionToU8", false, true, true, true),
    MakeOp("ResidualLayerNorm", false, false, false, false, true),
    MakeOp("ResidualLayerNormToU8", false, false, true, false, true),
    MakeOp("SparseQLinearLayerNorm", true, false, false, false, false, true),
    MakeOp("SparseQLinearLayerNormToU8", true, false, true, false, false, true),
    MakeOp("SparseQLinearFromU8LayerNorm", true, true, false, false, false, true),
    MakeOp("SparseQLinearFromU8LayerNormToU8", true, true, true, false, false, true),
    MakeOp("EmbeddingsLayerNormToU8", false, false, true, false, true, false, 1, true),
};

// `why` into the caller's buffer (truncated, terminated); the C entry points' nullptr.
const char* CopyError(const std::string& why, char* error, size_t size) {
  if (size > 0) {
    std::strncpy(error, why.c_str(), size - 1);
    error[size - 1] = '\0';
  }
  return nullptr;
}

}  // namespace

extern "C" {

// The path this library dispatches to on this CPU, or nullptr with the reason in `error`.
__attribute__((visibility("default"))) const char* sparse_transfer_kernels_isa(char* error,
                                                                               size_t size) {
  st::Isa isa;
  std::string why;
  if (st::SelectIsa(&isa, &why)) return st::IsaName(isa);
  return CopyError(why, error, size);
}

// The form a weight in the spec's packing runs in on this library's path ("amx",
// "amx-expanded", "quads", "blocks"), or nullptr with the reason in `error`: what the ops
// choose at load, for tests.
__attribute__((visibility("default"))) const char* sparse_transfer_kernels_form(
    const int32_t* row_ptr, int64_t n_plus_1, const int32_t* block_col, int64_t nnzb,
    const int8_t* values, int64_t values_count, int64_t k, char* error, size_t size) {
  st::Isa isa;
  std::string why;
  try {  // no C++ exception may cross into the caller
    st::Packed w;
    if (st::SelectIsa(&isa, &why) &&
        st::PackWeight(row_ptr, n_plus_1, block_col, nnzb, values, values_count, k, &w, &why)) {
      PlanForms(isa, &w);
      return st::FormName(w);
    }
  } catch (const std::exception& e) {
    why = e.what();
  }
  return CopyError(why, error, size);
}

__attribute__((visibility("default"))) uint32_t sparse_transfer_kernels_ort_api_version() {
  return kOrtApiVersion;
}

__attribute__((visibility("default"))) OrtStatus* RegisterCustomOps(OrtSessionOptions* options,
                                                                    const OrtApiBase* base) {
  const OrtApi* api = base->GetApi(kOrtApiVersion);
  if (api == nullptr) {  // older ORT: report through its version-1 table (CreateStatus is slot 0)
    const OrtApi* v1 = base->GetApi(1);
    auto create = reinterpret_cast<OrtStatus* (*)(int, const char*)>(
        reinterpret_cast<void* const*>(v1)[kCreateStatus]);
    const std::string message = std::string("sparse_transfer kernels need ONNX Runtime >= 1.17 "
                                            "(C API 17); this is ") + base->GetVersionString();
    return create(kOrtFail, message.c_str());
  }
  BindOrtFns(api, &g_ort);
  std::string error;
  if (!st::SelectIsa(&g_isa, &error)) return g_ort.CreateStatus(kOrtFail, error.c_str());
  OrtCustomOpDomain* domain = nullptr;  // lives as long as the process (sessions refer to it)
  ST_RETURN_IF(g_ort.CreateCustomOpDomain(kDomain, &domain));
  for (OpDef& op : g_ops) ST_RETURN_IF(g_ort.CustomOpDomain_Add(domain, &op.base));
  return g_ort.AddCustomOpDomain(options, domain);
}

}  // extern "C"
