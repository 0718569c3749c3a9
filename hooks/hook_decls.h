// Declarations of every interposed function (defined in cudart_hooks.cpp, driver_hooks.cpp,
// proc_address_hooks.cpp, ipc_hooks.cpp), with default visibility so that they leave the shim.
// Signatures come from the CUDA 13 headers; the forms the headers do not declare publicly
// (_ptsz, the legacy 4-argument cuGetProcAddress) are declared here.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#define KVC_HOOK_EXPORT extern "C" __attribute__((visibility("default")))

KVC_HOOK_EXPORT cudaError_t cudaMalloc(void** dev_ptr, size_t size);
KVC_HOOK_EXPORT cudaError_t cudaFree(void* dev_ptr);
KVC_HOOK_EXPORT cudaError_t cudaMallocAsync(void** dev_ptr, size_t size, cudaStream_t stream);
KVC_HOOK_EXPORT cudaError_t cudaMallocAsync_ptsz(void** dev_ptr, size_t size, cudaStream_t stream);
KVC_HOOK_EXPORT cudaError_t cudaFreeAsync(void* dev_ptr, cudaStream_t stream);
KVC_HOOK_EXPORT cudaError_t cudaFreeAsync_ptsz(void* dev_ptr, cudaStream_t stream);
KVC_HOOK_EXPORT cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
KVC_HOOK_EXPORT cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t* handle, void* dev_ptr);
KVC_HOOK_EXPORT cudaError_t cudaGetDriverEntryPoint(const char* symbol, void** func_ptr,
                                                    unsigned long long flags,
                                                    cudaDriverEntryPointQueryResult* status);
KVC_HOOK_EXPORT cudaError_t cudaGetDriverEntryPoint_ptsz(const char* symbol, void** func_ptr,
                                                         unsigned long long flags,
                                                         cudaDriverEntryPointQueryResult* status);
KVC_HOOK_EXPORT cudaError_t
cudaGetDriverEntryPointByVersion(const char* symbol, void** func_ptr, unsigned int cuda_version,
                                 unsigned long long flags, cudaDriverEntryPointQueryResult* status);
KVC_HOOK_EXPORT cudaError_t cudaGetDriverEntryPointByVersion_ptsz(
    const char* symbol, void** func_ptr, unsigned int cuda_version, unsigned long long flags,
    cudaDriverEntryPointQueryResult* status);

KVC_HOOK_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytesize);
KVC_HOOK_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr);
KVC_HOOK_EXPORT CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytesize, CUstream stream);
KVC_HOOK_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t bytesize, CUstream stream);
KVC_HOOK_EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream stream);
KVC_HOOK_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream stream);
KVC_HOOK_EXPORT CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes);
KVC_HOOK_EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle* handle, CUdeviceptr dptr);
KVC_HOOK_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cuda_version,
                                             cuuint64_t flags,
                                             CUdriverProcAddressQueryResult* status);
// cuda.h renames cuGetProcAddress to cuGetProcAddress_v2; the legacy 4-argument export keeps
// its own name through an assembler label.
KVC_HOOK_EXPORT CUresult KvcCuGetProcAddressLegacy(const char* symbol, void** pfn, int cuda_version,
                                                   cuuint64_t flags) __asm__("cuGetProcAddress");

// Types of the real functions, for RealAs<>.
namespace kvcached::hooks {
using CudaMallocFn = cudaError_t (*)(void**, size_t);
using CudaFreeFn = cudaError_t (*)(void*);
using CudaMallocAsyncFn = cudaError_t (*)(void**, size_t, cudaStream_t);
using CudaFreeAsyncFn = cudaError_t (*)(void*, cudaStream_t);
using CudaMemGetInfoFn = cudaError_t (*)(size_t*, size_t*);
using CudaIpcGetMemHandleFn = cudaError_t (*)(cudaIpcMemHandle_t*, void*);
using CudaGetDriverEntryPointFn = cudaError_t (*)(const char*, void**, unsigned long long,
                                                  cudaDriverEntryPointQueryResult*);
using CudaGetDriverEntryPointByVersionFn = cudaError_t (*)(const char*, void**, unsigned int,
                                                           unsigned long long,
                                                           cudaDriverEntryPointQueryResult*);
using CudaGetDeviceFn = cudaError_t (*)(int*);
using CudaSetDeviceFn = cudaError_t (*)(int);
using CudaDeviceSynchronizeFn = cudaError_t (*)();

using CuMemAllocFn = CUresult (*)(CUdeviceptr*, size_t);
using CuMemFreeFn = CUresult (*)(CUdeviceptr);
using CuMemAllocAsyncFn = CUresult (*)(CUdeviceptr*, size_t, CUstream);
using CuMemFreeAsyncFn = CUresult (*)(CUdeviceptr, CUstream);
using CuMemGetInfoFn = CUresult (*)(size_t*, size_t*);
using CuIpcGetMemHandleFn = CUresult (*)(CUipcMemHandle*, CUdeviceptr);
using CuGetProcAddressV2Fn = CUresult (*)(const char*, void**, int, cuuint64_t,
                                          CUdriverProcAddressQueryResult*);
using CuGetProcAddressLegacyFn = CUresult (*)(const char*, void**, int, cuuint64_t);
using CuCtxGetDeviceFn = CUresult (*)(CUdevice*);
using CuCtxSynchronizeFn = CUresult (*)();
}  // namespace kvcached::hooks
