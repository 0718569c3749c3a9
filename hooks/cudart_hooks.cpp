// Interposed CUDA runtime allocation functions. The bodies live in hook_paths.h; each hook here
// only binds its real function and arguments.
#include "core/log/log.h"
#include "hooks/hook_decls.h"
#include "hooks/hook_paths.h"
#include "hooks/hook_table.h"

namespace kvcached::hooks {
namespace {

// No cudart to forward to: the program reached our cudaMalloc without a CUDA runtime loaded
// under a libcudart.so* name (nothing sensible can be done but say so).
cudaError_t MissingRuntime(const char* call) {
  log::ErrorOnce(std::string("missing:") + call,
                 std::string(call) +
                     ": no CUDA runtime library (libcudart.so*) is loaded to forward the call to");
  return cudaErrorInitializationError;
}

cudaError_t MallocAsync(Fn fn, const char* call, void** dev_ptr, size_t size, cudaStream_t s) {
  auto real = RealAs<CudaMallocAsyncFn>(fn);
  if (real == nullptr) return MissingRuntime(call);
  return AllocateHook<RuntimeApi>(call, dev_ptr, size, [&] { return real(dev_ptr, size, s); });
}

cudaError_t FreeAsync(Fn fn, const char* call, void* dev_ptr, cudaStream_t s) {
  auto real = RealAs<CudaFreeAsyncFn>(fn);
  if (real == nullptr) return MissingRuntime(call);
  return FreeHook<RuntimeApi>(call, ToAddress(dev_ptr), [&] { return real(dev_ptr, s); });
}

cudaError_t EntryPoint(Fn fn, const char* call, const char* symbol, void** func_ptr,
                       unsigned long long flags, cudaDriverEntryPointQueryResult* status) {
  auto real = RealAs<CudaGetDriverEntryPointFn>(fn);
  if (real == nullptr) return MissingRuntime(call);
  const cudaError_t result = real(symbol, func_ptr, flags, status);
  if (result == cudaSuccess && func_ptr != nullptr) *func_ptr = SubstituteDriverPointer(*func_ptr);
  return result;
}

cudaError_t EntryPointByVersion(Fn fn, const char* call, const char* symbol, void** func_ptr,
                                unsigned int version, unsigned long long flags,
                                cudaDriverEntryPointQueryResult* status) {
  auto real = RealAs<CudaGetDriverEntryPointByVersionFn>(fn);
  if (real == nullptr) return MissingRuntime(call);
  const cudaError_t result = real(symbol, func_ptr, version, flags, status);
  if (result == cudaSuccess && func_ptr != nullptr) *func_ptr = SubstituteDriverPointer(*func_ptr);
  return result;
}

}  // namespace
}  // namespace kvcached::hooks

using namespace kvcached::hooks;  // NOLINT(google-build-using-namespace): hook bodies only

cudaError_t cudaMalloc(void** dev_ptr, size_t size) {
  auto real = RealAs<CudaMallocFn>(Fn::kCudaMalloc);
  if (real == nullptr) return MissingRuntime("cudaMalloc");
  return AllocateHook<RuntimeApi>("cudaMalloc", dev_ptr, size, [&] { return real(dev_ptr, size); });
}

cudaError_t cudaFree(void* dev_ptr) {
  auto real = RealAs<CudaFreeFn>(Fn::kCudaFree);
  if (real == nullptr) return MissingRuntime("cudaFree");
  return FreeHook<RuntimeApi>("cudaFree", ToAddress(dev_ptr), [&] { return real(dev_ptr); });
}

cudaError_t cudaMallocAsync(void** dev_ptr, size_t size, cudaStream_t stream) {
  return MallocAsync(Fn::kCudaMallocAsync, "cudaMallocAsync", dev_ptr, size, stream);
}

cudaError_t cudaMallocAsync_ptsz(void** dev_ptr, size_t size, cudaStream_t stream) {
  return MallocAsync(Fn::kCudaMallocAsyncPtsz, "cudaMallocAsync_ptsz", dev_ptr, size, stream);
}

cudaError_t cudaFreeAsync(void* dev_ptr, cudaStream_t stream) {
  return FreeAsync(Fn::kCudaFreeAsync, "cudaFreeAsync", dev_ptr, stream);
}

cudaError_t cudaFreeAsync_ptsz(void* dev_ptr, cudaStream_t stream) {
  return FreeAsync(Fn::kCudaFreeAsyncPtsz, "cudaFreeAsync_ptsz", dev_ptr, stream);
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  auto real = RealAs<CudaMemGetInfoFn>(Fn::kCudaMemGetInfo);
  if (real == nullptr) return MissingRuntime("cudaMemGetInfo");
  return MemGetInfoHook<RuntimeApi>("cudaMemGetInfo", free_bytes, total_bytes,
                                    [&] { return real(free_bytes, total_bytes); });
}

cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t* handle, void* dev_ptr) {
  auto real = RealAs<CudaIpcGetMemHandleFn>(Fn::kCudaIpcGetMemHandle);
  if (real == nullptr) return MissingRuntime("cudaIpcGetMemHandle");
  return IpcGetMemHandleHook<RuntimeApi>("cudaIpcGetMemHandle", ToAddress(dev_ptr),
                                         [&] { return real(handle, dev_ptr); });
}

cudaError_t cudaGetDriverEntryPoint(const char* symbol, void** func_ptr, unsigned long long flags,
                                    cudaDriverEntryPointQueryResult* status) {
  return EntryPoint(Fn::kCudaGetDriverEntryPoint, "cudaGetDriverEntryPoint", symbol, func_ptr,
                    flags, status);
}

cudaError_t cudaGetDriverEntryPoint_ptsz(const char* symbol, void** func_ptr,
                                         unsigned long long flags,
                                         cudaDriverEntryPointQueryResult* status) {
  return EntryPoint(Fn::kCudaGetDriverEntryPointPtsz, "cudaGetDriverEntryPoint_ptsz", symbol,
                    func_ptr, flags, status);
}

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** func_ptr,
                                             unsigned int cuda_version, unsigned long long flags,
                                             cudaDriverEntryPointQueryResult* status) {
  return EntryPointByVersion(Fn::kCudaGetDriverEntryPointByVersion,
                             "cudaGetDriverEntryPointByVersion", symbol, func_ptr, cuda_version,
                             flags, status);
}

cudaError_t cudaGetDriverEntryPointByVersion_ptsz(const char* symbol, void** func_ptr,
                                                  unsigned int cuda_version,
                                                  unsigned long long flags,
                                                  cudaDriverEntryPointQueryResult* status) {
  return EntryPointByVersion(Fn::kCudaGetDriverEntryPointByVersionPtsz,
                             "cudaGetDriverEntryPointByVersion_ptsz", symbol, func_ptr,
                             cuda_version, flags, status);
}
