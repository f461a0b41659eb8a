// The slice of ONNX Runtime's C ABI this library uses, declared here because the ORT wheel
// ships no headers. Source of truth: microsoft/onnxruntime,
// include/onnxruntime/core/session/onnxruntime_c_api.h (struct OrtApiBase, struct OrtApi,
// struct OrtCustomOp). We target ORT_API_VERSION 17 (ONNX Runtime 1.17): the newest entry we
// call, KernelContext_ParallelFor, is in the "Ort API v17" block of that header, and
// KernelInfoGetConstantInput_tensor (v15) and the V2 kernel callbacks of OrtCustomOp (v16) are
// older. OrtApi is an append-only table of function pointers, so a pointer's position never
// changes between versions: we index it with the positions below (counted in that header,
// 0 = CreateStatus) instead of redeclaring the 275 members before the last one we need.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

extern "C" {

constexpr uint32_t kOrtApiVersion = 17;  // ONNX Runtime >= 1.17

struct OrtStatus;
struct OrtApi;
struct OrtValue;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtTensorTypeAndShapeInfo;
struct OrtMemoryInfo;
struct OrtShapeInferContext;

// enum ONNXTensorElementDataType (values as in the header)
enum OnnxType : int {
  kTypeUndefined = 0,
  kTypeFloat = 1,
  kTypeUint8 = 2,
  kTypeInt8 = 3,
  kTypeInt32 = 6,
  kTypeInt64 = 7,
};

// enum OrtErrorCode
enum OrtErrorCodeValue : int { kOrtOk = 0, kOrtFail = 1, kOrtInvalidArgument = 2 };

struct OrtApiBase {
  const OrtApi* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)(void);
};

// struct OrtCustomOp up to the members of version 17 (GetEndVersion); ORT reads a member
// only when the op's `version` is at least the version that added it.
struct OrtCustomOp {
  uint32_t version;
  void* (*CreateKernel)(const OrtCustomOp* op, const OrtApi* api, const OrtKernelInfo* info);
  const char* (*GetName)(const OrtCustomOp* op);
  const char* (*GetExecutionProviderType)(const OrtCustomOp* op);
  int (*GetInputType)(const OrtCustomOp* op, size_t index);
  size_t (*GetInputTypeCount)(const OrtCustomOp* op);
  int (*GetOutputType)(const OrtCustomOp* op, size_t index);
  size_t (*GetOutputTypeCount)(const OrtCustomOp* op);
  void (*KernelCompute)(void* op_kernel, OrtKernelContext* context);
  void (*KernelDestroy)(void* op_kernel);
  int (*GetInputCharacteristic)(const OrtCustomOp* op, size_t index);   // 0 = required
  int (*GetOutputCharacteristic)(const OrtCustomOp* op, size_t index);  // 0 = required
  int (*GetInputMemoryType)(const OrtCustomOp* op, size_t index);       // 0 = default
  int (*GetVariadicInputMinArity)(const OrtCustomOp* op);
  int (*GetVariadicInputHomogeneity)(const OrtCustomOp* op);
  int (*GetVariadicOutputMinArity)(const OrtCustomOp* op);
  int (*GetVariadicOutputHomogeneity)(const OrtCustomOp* op);
  OrtStatus* (*CreateKernelV2)(const OrtCustomOp* op, const OrtApi* api,
                               const OrtKernelInfo* info, void** kernel);
  OrtStatus* (*KernelComputeV2)(void* op_kernel, OrtKernelContext* context);
  OrtStatus* (*InferOutputShapeFn)(const OrtCustomOp* op, OrtShapeInferContext* ctx);
  int (*GetStartVersion)(const OrtCustomOp* op);
  int (*GetEndVersion)(const OrtCustomOp* op);
};

}  // extern "C"

// Positions in struct OrtApi (onnxruntime_c_api.h, counted from CreateStatus = 0).
enum OrtApiSlot : int {
  kCreateStatus = 0,
  kGetErrorCode = 1,
  kGetErrorMessage = 2,
  kCreateCustomOpDomain = 26,
  kCustomOpDomainAdd = 27,
  kAddCustomOpDomain = 28,
  kGetTensorMutableData = 51,
  kGetTensorElementType = 60,
  kGetDimensionsCount = 61,
  kGetDimensions = 62,
  kGetTensorShapeElementCount = 64,
  kGetTensorTypeAndShape = 65,
  kKernelInfoGetAttributeFloat = 85,  // just before _int64 in onnxruntime_c_api.h's OrtApi
  kKernelInfoGetAttributeInt64 = 86,
  kKernelInfoGetAttributeString = 87,
  kKernelContextGetInputCount = 88,
  kKernelContextGetOutputCount = 89,
  kKernelContextGetInput = 90,
  kKernelContextGetOutput = 91,
  kReleaseStatus = 93,
  kReleaseTensorTypeAndShapeInfo = 99,
  kKernelInfoGetConstantInputTensor = 249,
  kKernelContextParallelFor = 274,
};

// The typed entries, looked up by position.
struct OrtFns {
  OrtStatus* (*CreateStatus)(int code, const char* msg);
  const char* (*GetErrorMessage)(const OrtStatus* status);
  void (*ReleaseStatus)(OrtStatus* status);
  OrtStatus* (*CreateCustomOpDomain)(const char* domain, OrtCustomOpDomain** out);
  OrtStatus* (*CustomOpDomain_Add)(OrtCustomOpDomain* domain, const OrtCustomOp* op);
  OrtStatus* (*AddCustomOpDomain)(OrtSessionOptions* options, OrtCustomOpDomain* domain);
  OrtStatus* (*GetTensorMutableData)(OrtValue* value, void** out);
  OrtStatus* (*GetTensorElementType)(const OrtTensorTypeAndShapeInfo* info, int* out);
  OrtStatus* (*GetDimensionsCount)(const OrtTensorTypeAndShapeInfo* info, size_t* out);
  OrtStatus* (*GetDimensions)(const OrtTensorTypeAndShapeInfo* info, int64_t* dims, size_t n);
  OrtStatus* (*GetTensorTypeAndShape)(const OrtValue* value, OrtTensorTypeAndShapeInfo** out);
  void (*ReleaseTensorTypeAndShapeInfo)(OrtTensorTypeAndShapeInfo* info);
  OrtStatus* (*KernelInfoGetAttribute_float)(const OrtKernelInfo* info, const char* name,
                                             float* out);
  OrtStatus* (*KernelInfoGetAttribute_int64)(const OrtKernelInfo* info, const char* name,
                                             int64_t* out);
  OrtStatus* (*KernelInfoGetAttribute_string)(const OrtKernelInfo* info, const char* name,
                                              char* out, size_t* size);
  OrtStatus* (*KernelContext_GetInputCount)(const OrtKernelContext* ctx, size_t* out);
  OrtStatus* (*KernelContext_GetInput)(const OrtKernelContext* ctx, size_t index,
                                       const OrtValue** out);
  OrtStatus* (*KernelContext_GetOutput)(OrtKernelContext* ctx, size_t index,
                                        const int64_t* dims, size_t dim_count, OrtValue** out);
  OrtStatus* (*KernelInfoGetConstantInput_tensor)(const OrtKernelInfo* info, size_t index,
                                                  int* is_constant, const OrtValue** out);
  OrtStatus* (*KernelContext_ParallelFor)(const OrtKernelContext* ctx, void (*fn)(void*, size_t),
                                          size_t total, size_t num_batch, void* user_data);
};

inline void BindOrtFns(const OrtApi* api, OrtFns* f) {
  auto slots = reinterpret_cast<void* const*>(api);
  auto at = [slots](OrtApiSlot s, auto& member) {
    member = reinterpret_cast<std::remove_reference_t<decltype(member)>>(slots[s]);
  };
  at(kCreateStatus, f->CreateStatus);
  at(kGetErrorMessage, f->GetErrorMessage);
  at(kReleaseStatus, f->ReleaseStatus);
  at(kCreateCustomOpDomain, f->CreateCustomOpDomain);
  at(kCustomOpDomainAdd, f->CustomOpDomain_Add);
  at(kAddCustomOpDomain, f->AddCustomOpDomain);
  at(kGetTensorMutableData, f->GetTensorMutableData);
  at(kGetTensorElementType, f->GetTensorElementType);
  at(kGetDimensionsCount, f->GetDimensionsCount);
  at(kGetDimensions, f->GetDimensions);
  at(kGetTensorTypeAndShape, f->GetTensorTypeAndShape);
  at(kReleaseTensorTypeAndShapeInfo, f->ReleaseTensorTypeAndShapeInfo);
  at(kKernelInfoGetAttributeFloat, f->KernelInfoGetAttribute_float);
  at(kKernelInfoGetAttributeInt64, f->KernelInfoGetAttribute_int64);
  at(kKernelInfoGetAttributeString, f->KernelInfoGetAttribute_string);
  at(kKernelContextGetInputCount, f->KernelContext_GetInputCount);
  at(kKernelContextGetInput, f->KernelContext_GetInput);
  at(kKernelContextGetOutput, f->KernelContext_GetOutput);
  at(kKernelInfoGetConstantInputTensor, f->KernelInfoGetConstantInput_tensor);
  at(kKernelContextParallelFor, f->KernelContext_ParallelFor);
}
