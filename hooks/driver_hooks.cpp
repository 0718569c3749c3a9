// Interposed CUDA driver allocation functions (the bodies live in hook_paths.h), and the two
// cuGetProcAddress forms through which the runtime and PyTorch reach the driver.
#include "core/log/log.h"
#include "hooks/hook_decls.h"
#include "hooks/hook_paths.h"
#include "hooks/hook_table.h"

namespace kvcached::hooks {
namespace {

CUresult MissingDriver(const char* call) {
  log::ErrorOnce(std::string("missing:") + call,
                 std::string(call) +
                     ": the CUDA driver (libcuda.so.1) could not be found to "
                     "forward the call to");
  return CUDA_ERROR_NOT_INITIALIZED;
}

CUresult AllocAsync(Fn fn, const char* call, CUdeviceptr* dptr, size_t size, CUstream stream) {
  auto real = RealAs<CuMemAllocAsyncFn>(fn);
  if (real == nullptr) return MissingDriver(call);
  return AllocateHook<DriverApi>(call, dptr, size, [&] { return real(dptr, size, stream); });
}

CUresult FreeAsync(Fn fn, const char* call, CUdeviceptr dptr, CUstream stream) {
  auto real = RealAs<CuMemFreeAsyncFn>(fn);
  if (real == nullptr) return MissingDriver(call);
  return FreeHook<DriverApi>(call, ToAddress(dptr), [&] { return real(dptr, stream); });
}

}  // namespace
}  // namespace kvcached::hooks

using namespace kvcached::hooks;  // NOLINT(google-build-using-namespace): hook bodies only

CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytesize) {
  auto real = RealAs<CuMemAllocFn>(Fn::kCuMemAlloc);
  if (real == nullptr) return MissingDriver("cuMemAlloc_v2");
  return AllocateHook<DriverApi>("cuMemAlloc_v2", dptr, bytesize,
                                 [&] { return real(dptr, bytesize); });
}

CUresult cuMemFree_v2(CUdeviceptr dptr) {
  auto real = RealAs<CuMemFreeFn>(Fn::kCuMemFree);
  if (real == nullptr) return MissingDriver("cuMemFree_v2");
  return FreeHook<DriverApi>("cuMemFree_v2", ToAddress(dptr), [&] { return real(dptr); });
}

CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytesize, CUstream stream) {
  return AllocAsync(Fn::kCuMemAllocAsync, "cuMemAllocAsync", dptr, bytesize, stream);
}

CUresult cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t bytesize, CUstream stream) {
  return AllocAsync(Fn::kCuMemAllocAsyncPtsz, "cuMemAllocAsync_ptsz", dptr, bytesize, stream);
}

CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream stream) {
  return FreeAsync(Fn::kCuMemFreeAsync, "cuMemFreeAsync", dptr, stream);
}

CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream stream) {
  return FreeAsync(Fn::kCuMemFreeAsyncPtsz, "cuMemFreeAsync_ptsz", dptr, stream);
}

CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
  auto real = RealAs<CuMemGetInfoFn>(Fn::kCuMemGetInfo);
  if (real == nullptr) return MissingDriver("cuMemGetInfo_v2");
  return MemGetInfoHook<DriverApi>("cuMemGetInfo_v2", free_bytes, total_bytes,
                                   [&] { return real(free_bytes, total_bytes); });
}

CUresult cuIpcGetMemHandle(CUipcMemHandle* handle, CUdeviceptr dptr) {
  auto real = RealAs<CuIpcGetMemHandleFn>(Fn::kCuIpcGetMemHandle);
  if (real == nullptr) return MissingDriver("cuIpcGetMemHandle");
  return IpcGetMemHandleHook<DriverApi>("cuIpcGetMemHandle", ToAddress(dptr),
                                        [&] { return real(handle, dptr); });
}

// cuGetProcAddress: the real lookup always runs with the caller's exact arguments; only a
// returned pointer that is exactly the function one of our hooks forwards to is replaced.
CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cuda_version, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* status) {
  auto real = RealAs<CuGetProcAddressV2Fn>(Fn::kCuGetProcAddressV2);
  if (real == nullptr) return MissingDriver("cuGetProcAddress_v2");
  const CUresult result = real(symbol, pfn, cuda_version, flags, status);
  if (result == CUDA_SUCCESS && pfn != nullptr) *pfn = SubstituteDriverPointer(*pfn);
  return result;
}

CUresult KvcCuGetProcAddressLegacy(const char* symbol, void** pfn, int cuda_version,
                                   cuuint64_t flags) {
  auto real = RealAs<CuGetProcAddressLegacyFn>(Fn::kCuGetProcAddress);
  if (real == nullptr) return MissingDriver("cuGetProcAddress");
  const CUresult result = real(symbol, pfn, cuda_version, flags);
  if (result == CUDA_SUCCESS && pfn != nullptr) *pfn = SubstituteDriverPointer(*pfn);
  return result;
}
