// Declarations of every interposed function, generated from hooks/hook_list.def, with default
// visibility so that they leave the shim (defined in cudart_hooks.cpp and driver_hooks.cpp), and
// the types of the real functions behind every entry. Signatures come from the CUDA 13 headers:
// a declaration here that differs from theirs does not compile. The forms the headers do not
// declare publicly (_ptsz, the legacy 4-argument cuGetProcAddress) are declared only here.
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "hooks/hook_table.h"

#define KVC_HOOK_EXPORT extern "C" __attribute__((visibility("default")))

#define KVC_HOOK(id, name, lib, proc_name, proc_version, proc_flags, ret, params) \
  KVC_HOOK_EXPORT ret name params;
#define KVC_HOOK_RENAMED(id, cxx_name, symbol, lib, proc_name, proc_version, proc_flags, ret, \
                         params)                                                              \
  KVC_HOOK_EXPORT ret cxx_name params __asm__(symbol);
#define KVC_HELPER(...)
#include "hooks/hook_list.def"
#undef KVC_HOOK
#undef KVC_HOOK_RENAMED
#undef KVC_HELPER

namespace kvcached::hooks {

// FnTraits<Fn::kX>::Type (FnType<Fn::kX>): the type of the real function behind entry kX.
template <Fn fn>
struct FnTraits;
#define KVC_HOOK(id, name, lib, proc_name, proc_version, proc_flags, ret, params)       \
  template <>                                                                           \
  struct FnTraits<Fn::id> {                                                             \
    using Type = ret(*) params; /* NOLINT(bugprone-macro-parentheses): ret is a type */ \
  };
#define KVC_HOOK_RENAMED(id, cxx_name, symbol, lib, proc_name, proc_version, proc_flags, ret, \
                         params)                                                              \
  KVC_HOOK(id, cxx_name, lib, proc_name, proc_version, proc_flags, ret, params)
#define KVC_HELPER(id, symbol, lib, proc_name, proc_version, proc_flags, ret, params) \
  KVC_HOOK(id, symbol, lib, proc_name, proc_version, proc_flags, ret, params)
#include "hooks/hook_list.def"
#undef KVC_HOOK
#undef KVC_HOOK_RENAMED
#undef KVC_HELPER
template <Fn fn>
using FnType = typename FnTraits<fn>::Type;

// Names for the types the hook bodies share.
using CudaMallocFn = FnType<Fn::kCudaMalloc>;
using CudaFreeFn = FnType<Fn::kCudaFree>;
using CudaMallocAsyncFn = FnType<Fn::kCudaMallocAsync>;
using CudaFreeAsyncFn = FnType<Fn::kCudaFreeAsync>;
using CudaMemGetInfoFn = FnType<Fn::kCudaMemGetInfo>;
using CudaIpcGetMemHandleFn = FnType<Fn::kCudaIpcGetMemHandle>;
using CudaGetDriverEntryPointFn = FnType<Fn::kCudaGetDriverEntryPoint>;
using CudaGetDriverEntryPointByVersionFn = FnType<Fn::kCudaGetDriverEntryPointByVersion>;
using CudaGetDeviceFn = FnType<Fn::kCudaGetDevice>;
using CudaSetDeviceFn = FnType<Fn::kCudaSetDevice>;
using CudaDeviceSynchronizeFn = FnType<Fn::kCudaDeviceSynchronize>;

using CuMemAllocFn = FnType<Fn::kCuMemAlloc>;
using CuMemFreeFn = FnType<Fn::kCuMemFree>;
using CuMemAllocAsyncFn = FnType<Fn::kCuMemAllocAsync>;
using CuMemFreeAsyncFn = FnType<Fn::kCuMemFreeAsync>;
using CuMemGetInfoFn = FnType<Fn::kCuMemGetInfo>;
using CuIpcGetMemHandleFn = FnType<Fn::kCuIpcGetMemHandle>;
using CuGetProcAddressV2Fn = FnType<Fn::kCuGetProcAddressV2>;
using CuGetProcAddressLegacyFn = FnType<Fn::kCuGetProcAddress>;
using CuCtxGetDeviceFn = FnType<Fn::kCuCtxGetDevice>;
using CuCtxSynchronizeFn = FnType<Fn::kCuCtxSynchronize>;

}  // namespace kvcached::hooks
