// The driver functions the fake implements, by base name (cuMemAlloc for cuMemAlloc_v2 and its
// per-thread forms): the unit of call counting and fault injection.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#define FAKECUDA_FUNCTIONS(X)               \
  X(cuInit)                                 \
  X(cuDriverGetVersion)                     \
  X(cuGetErrorName)                         \
  X(cuGetErrorString)                       \
  X(cuGetProcAddress)                       \
  X(cuDeviceGet)                            \
  X(cuDeviceGetCount)                       \
  X(cuDeviceGetName)                        \
  X(cuDeviceGetUuid)                        \
  X(cuDeviceTotalMem)                       \
  X(cuDeviceGetAttribute)                   \
  X(cuDevicePrimaryCtxRetain)               \
  X(cuDevicePrimaryCtxRelease)              \
  X(cuDevicePrimaryCtxGetState)             \
  X(cuCtxGetCurrent)                        \
  X(cuCtxSetCurrent)                        \
  X(cuCtxPushCurrent)                       \
  X(cuCtxPopCurrent)                        \
  X(cuCtxGetDevice)                         \
  X(cuCtxSynchronize)                       \
  X(cuStreamCreate)                         \
  X(cuStreamDestroy)                        \
  X(cuStreamSynchronize)                    \
  X(cuMemGetInfo)                           \
  X(cuMemAlloc)                             \
  X(cuMemFree)                              \
  X(cuMemAllocAsync)                        \
  X(cuMemFreeAsync)                         \
  X(cuMemGetAddressRange)                   \
  X(cuMemsetD8)                             \
  X(cuMemsetD32)                            \
  X(cuMemsetD8Async)                        \
  X(cuMemcpy)                               \
  X(cuMemcpyAsync)                          \
  X(cuMemcpyHtoD)                           \
  X(cuMemcpyDtoH)                           \
  X(cuMemcpyDtoD)                           \
  X(cuMemGetAllocationGranularity)          \
  X(cuMemAddressReserve)                    \
  X(cuMemAddressFree)                       \
  X(cuMemCreate)                            \
  X(cuMemRelease)                           \
  X(cuMemMap)                               \
  X(cuMemUnmap)                             \
  X(cuMemSetAccess)                         \
  X(cuMemGetAccess)                         \
  X(cuMemRetainAllocationHandle)            \
  X(cuMemGetAllocationPropertiesFromHandle) \
  X(cuPointerGetAttribute)                  \
  X(cuIpcGetMemHandle)

namespace fakecuda {

// The function names are spelled as in cuda.h, where some are macros (cuMemAlloc ->
// cuMemAlloc_v2); the enumerators therefore get a k_ prefix and their names come from #fn.
enum class Fn : int {
#define FAKECUDA_ENUM(fn) k_##fn,
  FAKECUDA_FUNCTIONS(FAKECUDA_ENUM)
#undef FAKECUDA_ENUM
      kCount
};
inline constexpr std::size_t kFnCount = static_cast<std::size_t>(Fn::kCount);

std::string_view FnName(Fn fn);

// "cuMemAlloc", "cuMemAlloc_v2", "cuMemcpyHtoD_v2_ptds" -> Fn; nullopt for anything else.
std::optional<Fn> FnFromName(std::string_view name);

}  // namespace fakecuda
