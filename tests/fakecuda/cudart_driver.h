// How the fake runtime reaches the driver, the way the real libcudart does: dlopen
// "libcuda.so.1" (so LD_LIBRARY_PATH, or this library's $ORIGIN RUNPATH, picks which), dlsym
// only cuGetProcAddress_v2 (or cuGetProcAddress), and every other entry point through it.
// That path is what lets the shim's dlsym and cuGetProcAddress interposers be tested.
#pragma once

#include <cuda.h>

// Driver entry points the runtime uses: X(base name as asked of cuGetProcAddress, the
// declaration in cuda.h whose type the pointer has).
#define FAKECUDART_DRIVER_FUNCTIONS(X)                  \
  X(cuInit, cuInit)                                     \
  X(cuDriverGetVersion, cuDriverGetVersion)             \
  X(cuDeviceGetCount, cuDeviceGetCount)                 \
  X(cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain) \
  X(cuCtxGetCurrent, cuCtxGetCurrent)                   \
  X(cuCtxSetCurrent, cuCtxSetCurrent)                   \
  X(cuCtxGetDevice, cuCtxGetDevice)                     \
  X(cuCtxSynchronize, cuCtxSynchronize)                 \
  X(cuMemGetInfo, cuMemGetInfo_v2)                      \
  X(cuMemAlloc, cuMemAlloc_v2)                          \
  X(cuMemFree, cuMemFree_v2)                            \
  X(cuMemAllocAsync, cuMemAllocAsync)                   \
  X(cuMemFreeAsync, cuMemFreeAsync)                     \
  X(cuMemcpy, cuMemcpy)                                 \
  X(cuMemsetD8, cuMemsetD8_v2)                          \
  X(cuIpcGetMemHandle, cuIpcGetMemHandle)               \
  X(cuStreamCreate, cuStreamCreate)                     \
  X(cuStreamDestroy, cuStreamDestroy_v2)                \
  X(cuStreamSynchronize, cuStreamSynchronize)

namespace fakecudart {

// One table per stream flavour: `legacy` for the plain runtime API, `per_thread` for its
// _ptds/_ptsz forms (resolved with CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM).
struct DriverTable {
#define FAKECUDART_MEMBER(base, decl) decltype(&::decl) base = nullptr;
  FAKECUDART_DRIVER_FUNCTIONS(FAKECUDART_MEMBER)
#undef FAKECUDART_MEMBER
};

struct Driver {
  CUresult init_result = CUDA_SUCCESS;  // of cuInit, CUDA_SUCCESS once usable
  bool loaded = false;                  // libcuda.so.1 found and every entry point resolved
  DriverTable legacy;
  DriverTable per_thread;
  // cuGetProcAddress_v2, or the legacy cuGetProcAddress wrapped to the same shape.
  CUresult (*get_proc)(const char*, void**, int, cuuint64_t,
                       CUdriverProcAddressQueryResult*) = nullptr;
};

// Loads and initialises the driver once per process; later calls return the same result.
const Driver& GetDriver();

}  // namespace fakecudart
