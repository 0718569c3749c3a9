// Api: typed pointers to every driver entry point the core calls, resolved once through
// cuGetProcAddress. Types come from cuda.h (decltype), so a signature mismatch is a compile error.
#pragma once

#include <cuda.h>

namespace kvcached::driver {

// X-macro lists. The argument is the public name ("cuMemsetD8"); cuda.h macros may rename the
// member to its versioned symbol (cuMemsetD8_v2), which callers reach through the same macro.
#define KVC_DRIVER_REQUIRED_FNS(X) \
  X(cuInit)                        \
  X(cuDriverGetVersion)            \
  X(cuGetErrorName)                \
  X(cuGetErrorString)              \
  X(cuDeviceGet)                   \
  X(cuDeviceGetCount)              \
  X(cuDeviceGetAttribute)          \
  X(cuDeviceGetUuid)               \
  X(cuDeviceTotalMem)              \
  X(cuDevicePrimaryCtxRetain)      \
  X(cuDevicePrimaryCtxRelease)     \
  X(cuCtxGetCurrent)               \
  X(cuCtxSetCurrent)               \
  X(cuCtxSynchronize)              \
  X(cuMemGetAllocationGranularity) \
  X(cuMemAddressReserve)           \
  X(cuMemAddressFree)              \
  X(cuMemCreate)                   \
  X(cuMemRelease)                  \
  X(cuMemMap)                      \
  X(cuMemUnmap)                    \
  X(cuMemSetAccess)                \
  X(cuMemsetD8)

// Resolved when present; null otherwise (only the hooks need them, for pass-through).
#define KVC_DRIVER_OPTIONAL_FNS(X) \
  X(cuCtxGetDevice)                \
  X(cuMemGetInfo)                  \
  X(cuMemAlloc)                    \
  X(cuMemFree)

struct Api {
#define KVC_DRIVER_MEMBER(name) \
  decltype(&::name) name = nullptr;  // NOLINT(bugprone-macro-parentheses)
  KVC_DRIVER_REQUIRED_FNS(KVC_DRIVER_MEMBER)
  KVC_DRIVER_OPTIONAL_FNS(KVC_DRIVER_MEMBER)
#undef KVC_DRIVER_MEMBER
};

}  // namespace kvcached::driver
