// Typed pointers to the driver's functions, resolved with dlsym from the driver in use (see
// fake_driver.h) under the names cuda.h gives them (cuMemAlloc -> "cuMemAlloc_v2"), as an
// application compiled against cuda.h would call them. Lets tests drive the fake (or the real
// driver) without linking libcuda.
#pragma once

#include <cuda.h>

#include <string>

// clang-format off
#define KVCACHED_TEST_DRIVER_FUNCTIONS(X)    \
  X(cuInit)                                  \
  X(cuDriverGetVersion)                      \
  X(cuGetErrorName)                          \
  X(cuGetErrorString)                        \
  X(cuGetProcAddress)                        \
  X(cuDeviceGet)                             \
  X(cuDeviceGetCount)                        \
  X(cuDeviceGetName)                         \
  X(cuDeviceGetUuid)                         \
  X(cuDeviceTotalMem)                        \
  X(cuDeviceGetAttribute)                    \
  X(cuDevicePrimaryCtxRetain)                \
  X(cuDevicePrimaryCtxRelease)               \
  X(cuCtxGetCurrent)                         \
  X(cuCtxSetCurrent)                         \
  X(cuCtxPushCurrent)                        \
  X(cuCtxPopCurrent)                         \
  X(cuCtxGetDevice)                          \
  X(cuCtxSynchronize)                        \
  X(cuMemGetInfo)                            \
  X(cuMemAlloc)                              \
  X(cuMemFree)                               \
  X(cuMemAllocAsync)                         \
  X(cuMemFreeAsync)                          \
  X(cuMemsetD8)                              \
  X(cuMemcpy)                                \
  X(cuMemcpyHtoD)                            \
  X(cuMemcpyDtoH)                            \
  X(cuMemGetAllocationGranularity)           \
  X(cuMemAddressReserve)                     \
  X(cuMemAddressFree)                        \
  X(cuMemCreate)                             \
  X(cuMemRelease)                            \
  X(cuMemMap)                                \
  X(cuMemUnmap)                              \
  X(cuMemSetAccess)                          \
  X(cuMemGetAccess)                          \
  X(cuMemRetainAllocationHandle)             \
  X(cuMemGetAllocationPropertiesFromHandle)  \
  X(cuPointerGetAttribute)                   \
  X(cuIpcGetMemHandle)                       \
  X(cuStreamCreate)                          \
  X(cuStreamDestroy)
// clang-format on

namespace kvcached::testing {

struct DriverApi {
  // Member names go through cuda.h's macros too (api.cuMemAlloc is api.cuMemAlloc_v2).
#define KVCACHED_TEST_DRIVER_MEMBER(fn) decltype(&::fn) fn = nullptr;
  KVCACHED_TEST_DRIVER_FUNCTIONS(KVCACHED_TEST_DRIVER_MEMBER)
#undef KVCACHED_TEST_DRIVER_MEMBER
  std::string error;  // empty when every function was found
};

// Resolved once per process; check .error before use.
const DriverApi& Driver();

// cuInit(0), then retains device `dev`'s primary context and makes it current on this thread.
// Returns the first failing CUresult.
CUresult InitAndMakeCurrent(int dev = 0);

// "CUDA_ERROR_OUT_OF_MEMORY" for r, through the driver's cuGetErrorName.
std::string ResultName(CUresult r);

}  // namespace kvcached::testing
