// Shared by the driver probes (single-file programs built with g++ on the GPU machine; see each
// file's build line): a checked-call macro that prints failures and carries on, and device 0's
// primary context with the allocation properties and access descriptor every probe uses.
#pragma once

#include <cuda.h>

#include <cstdio>

#define CK(x)                                            \
  do {                                                   \
    CUresult r_ = (x);                                   \
    if (r_ != CUDA_SUCCESS) {                            \
      const char* n_ = nullptr;                          \
      cuGetErrorName(r_, &n_);                           \
      std::printf("FAIL %s -> %s\n", #x, n_ ? n_ : "?"); \
    }                                                    \
  } while (0)

struct ProbeDevice {
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  CUmemAllocationProp prop{};  // pinned device memory on dev
  CUmemAccessDesc acc{};       // read/write from dev
};

// cuInit, device 0, its primary context made current.
inline ProbeDevice OpenDevice0() {
  ProbeDevice d;
  CK(cuInit(0));
  CK(cuDeviceGet(&d.dev, 0));
  CK(cuDevicePrimaryCtxRetain(&d.ctx, d.dev));
  CK(cuCtxSetCurrent(d.ctx));
  d.prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  d.prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  d.prop.location.id = d.dev;
  d.acc.location = d.prop.location;
  d.acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  return d;
}
