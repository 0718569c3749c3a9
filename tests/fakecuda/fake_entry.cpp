// Entry points that need no device: driver version, error names, and cuGetProcAddress, through
// which cudart and PyTorch reach every other driver function.
#include <cstring>
#include <string_view>

#include "tests/fakecuda/fake_errors.h"
#include "tests/fakecuda/fake_state.h"

namespace fakecuda {
namespace {

struct ProcEntry {
  const char* name;  // base name, as callers ask for it
  int version;       // first CUDA version whose ABI this variant has
  bool per_thread;   // a _ptds/_ptsz variant
  void (*fn)();      // the exported function
};

template <class F>
void (*AsProc(F f))() {
  return reinterpret_cast<void (*)()>(f);
}

// Every variant the fake exports, tagged as the real driver tags them.
const ProcEntry kProcs[] = {
    {"cuInit", 2000, false, AsProc(&cuInit)},
    {"cuDriverGetVersion", 2020, false, AsProc(&cuDriverGetVersion)},
    {"cuGetErrorName", 6000, false, AsProc(&cuGetErrorName)},
    {"cuGetErrorString", 6000, false, AsProc(&cuGetErrorString)},
    {"cuGetProcAddress", 11030, false, AsProc(&cuGetProcAddress)},
    {"cuGetProcAddress", 12000, false, AsProc(&cuGetProcAddress_v2)},
    {"cuDeviceGet", 2000, false, AsProc(&cuDeviceGet)},
    {"cuDeviceGetCount", 2000, false, AsProc(&cuDeviceGetCount)},
    {"cuDeviceGetName", 2000, false, AsProc(&cuDeviceGetName)},
    {"cuDeviceGetUuid", 9020, false, AsProc(&cuDeviceGetUuid)},
    {"cuDeviceGetUuid", 11040, false, AsProc(&cuDeviceGetUuid_v2)},
    {"cuDeviceTotalMem", 2000, false, AsProc(&cuDeviceTotalMem)},
    {"cuDeviceTotalMem", 3020, false, AsProc(&cuDeviceTotalMem_v2)},
    {"cuDeviceGetAttribute", 2000, false, AsProc(&cuDeviceGetAttribute)},
    {"cuDevicePrimaryCtxRetain", 7000, false, AsProc(&cuDevicePrimaryCtxRetain)},
    {"cuDevicePrimaryCtxRelease", 7000, false, AsProc(&cuDevicePrimaryCtxRelease)},
    {"cuDevicePrimaryCtxRelease", 11000, false, AsProc(&cuDevicePrimaryCtxRelease_v2)},
    {"cuDevicePrimaryCtxGetState", 7000, false, AsProc(&cuDevicePrimaryCtxGetState)},
    {"cuCtxGetCurrent", 4000, false, AsProc(&cuCtxGetCurrent)},
    {"cuCtxSetCurrent", 4000, false, AsProc(&cuCtxSetCurrent)},
    {"cuCtxPushCurrent", 2000, false, AsProc(&cuCtxPushCurrent)},
    {"cuCtxPushCurrent", 4000, false, AsProc(&cuCtxPushCurrent_v2)},
    {"cuCtxPopCurrent", 2000, false, AsProc(&cuCtxPopCurrent)},
    {"cuCtxPopCurrent", 4000, false, AsProc(&cuCtxPopCurrent_v2)},
    {"cuCtxGetDevice", 2000, false, AsProc(&cuCtxGetDevice)},
    {"cuCtxSynchronize", 2000, false, AsProc(&cuCtxSynchronize)},
    {"cuStreamCreate", 2000, false, AsProc(&cuStreamCreate)},
    {"cuStreamDestroy", 2000, false, AsProc(&cuStreamDestroy)},
    {"cuStreamDestroy", 4000, false, AsProc(&cuStreamDestroy_v2)},
    {"cuStreamSynchronize", 2000, false, AsProc(&cuStreamSynchronize)},
    {"cuStreamSynchronize", 7000, true, AsProc(&cuStreamSynchronize_ptsz)},
    {"cuMemGetInfo", 2000, false, AsProc(&cuMemGetInfo)},
    {"cuMemGetInfo", 3020, false, AsProc(&cuMemGetInfo_v2)},
    {"cuMemAlloc", 3020, false, AsProc(&cuMemAlloc_v2)},
    {"cuMemFree", 3020, false, AsProc(&cuMemFree_v2)},
    {"cuMemAllocAsync", 11020, false, AsProc(&cuMemAllocAsync)},
    {"cuMemAllocAsync", 11020, true, AsProc(&cuMemAllocAsync_ptsz)},
    {"cuMemFreeAsync", 11020, false, AsProc(&cuMemFreeAsync)},
    {"cuMemFreeAsync", 11020, true, AsProc(&cuMemFreeAsync_ptsz)},
    {"cuMemGetAddressRange", 3020, false, AsProc(&cuMemGetAddressRange_v2)},
    {"cuMemsetD8", 3020, false, AsProc(&cuMemsetD8_v2)},
    {"cuMemsetD8", 7000, true, AsProc(&cuMemsetD8_v2_ptds)},
    {"cuMemsetD32", 3020, false, AsProc(&cuMemsetD32_v2)},
    {"cuMemsetD32", 7000, true, AsProc(&cuMemsetD32_v2_ptds)},
    {"cuMemsetD8Async", 3020, false, AsProc(&cuMemsetD8Async)},
    {"cuMemsetD8Async", 7000, true, AsProc(&cuMemsetD8Async_ptsz)},
    {"cuMemcpy", 4000, false, AsProc(&cuMemcpy)},
    {"cuMemcpy", 7000, true, AsProc(&cuMemcpy_ptds)},
    {"cuMemcpyAsync", 4000, false, AsProc(&cuMemcpyAsync)},
    {"cuMemcpyAsync", 7000, true, AsProc(&cuMemcpyAsync_ptsz)},
    {"cuMemcpyHtoD", 3020, false, AsProc(&cuMemcpyHtoD_v2)},
    {"cuMemcpyHtoD", 7000, true, AsProc(&cuMemcpyHtoD_v2_ptds)},
    {"cuMemcpyDtoH", 3020, false, AsProc(&cuMemcpyDtoH_v2)},
    {"cuMemcpyDtoH", 7000, true, AsProc(&cuMemcpyDtoH_v2_ptds)},
    {"cuMemcpyDtoD", 3020, false, AsProc(&cuMemcpyDtoD_v2)},
    {"cuMemcpyDtoD", 7000, true, AsProc(&cuMemcpyDtoD_v2_ptds)},
    {"cuMemGetAllocationGranularity", 10020, false, AsProc(&cuMemGetAllocationGranularity)},
    {"cuMemAddressReserve", 10020, false, AsProc(&cuMemAddressReserve)},
    {"cuMemAddressFree", 10020, false, AsProc(&cuMemAddressFree)},
    {"cuMemCreate", 10020, false, AsProc(&cuMemCreate)},
    {"cuMemRelease", 10020, false, AsProc(&cuMemRelease)},
    {"cuMemMap", 10020, false, AsProc(&cuMemMap)},
    {"cuMemUnmap", 10020, false, AsProc(&cuMemUnmap)},
    {"cuMemSetAccess", 10020, false, AsProc(&cuMemSetAccess)},
    {"cuMemGetAccess", 10020, false, AsProc(&cuMemGetAccess)},
    {"cuMemRetainAllocationHandle", 11000, false, AsProc(&cuMemRetainAllocationHandle)},
    {"cuMemGetAllocationPropertiesFromHandle", 10020, false,
     AsProc(&cuMemGetAllocationPropertiesFromHandle)},
    {"cuPointerGetAttribute", 4000, false, AsProc(&cuPointerGetAttribute)},
    {"cuIpcGetMemHandle", 4010, false, AsProc(&cuIpcGetMemHandle)},
};

// Picks the newest variant whose version the caller's ABI covers; with PER_THREAD, a
// per-thread variant wins over a legacy-stream one.
CUresult Lookup(const char* symbol, void** pfn, int version, cuuint64_t flags,
                CUdriverProcAddressQueryResult* status) {
  const auto set_status = [status](CUdriverProcAddressQueryResult v) {
    if (status != nullptr) {
      *status = v;
    }
  };
  if (symbol == nullptr || pfn == nullptr || version <= 0 ||
      (flags & ~static_cast<cuuint64_t>(CU_GET_PROC_ADDRESS_LEGACY_STREAM |
                                        CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)) != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *pfn = nullptr;
  if (version > kDriverVersion) {
    return CUDA_ERROR_INVALID_VALUE;  // documented: newer than the driver
  }
  const bool per_thread = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
  const std::string_view name(symbol);
  bool known = false;
  const ProcEntry* best = nullptr;
  for (const ProcEntry& e : kProcs) {
    if (name != e.name) {
      continue;
    }
    known = true;
    if (e.version > version || (e.per_thread && !per_thread)) {
      continue;
    }
    if (best == nullptr || (e.per_thread && !best->per_thread) ||
        (e.per_thread == best->per_thread && e.version > best->version)) {
      best = &e;
    }
  }
  if (best == nullptr) {
    set_status(known ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                     : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
    return CUDA_ERROR_NOT_FOUND;
  }
  *pfn = reinterpret_cast<void*>(best->fn);
  set_status(CU_GET_PROC_ADDRESS_SUCCESS);
  return CUDA_SUCCESS;
}

}  // namespace
}  // namespace fakecuda

extern "C" {

CUresult cuDriverGetVersion(int* driverVersion) {
  FAKECUDA_ENTER(c, cuDriverGetVersion);
  if (driverVersion == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *driverVersion = fakecuda::kDriverVersion;  // works before cuInit, as on the real driver
  return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult error, const char** pStr) {
  FAKECUDA_ENTER(c, cuGetErrorName);
  if (pStr == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *pStr = fakecuda::ResultName(error);
  return *pStr != nullptr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult error, const char** pStr) {
  FAKECUDA_ENTER(c, cuGetErrorString);
  if (pStr == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *pStr = fakecuda::ResultString(error);
  return *pStr != nullptr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags,
                             CUdriverProcAddressQueryResult* symbolStatus) {
  FAKECUDA_ENTER(c, cuGetProcAddress);
  return fakecuda::Lookup(symbol, pfn, cudaVersion, flags, symbolStatus);
}

CUresult cuGetProcAddress(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags) {
  FAKECUDA_ENTER(c, cuGetProcAddress);
  return fakecuda::Lookup(symbol, pfn, cudaVersion, flags, nullptr);
}

}  // extern "C"
