// What the CUDA benchmarks share: CUDA_OK (a failed runtime call ends the program, naming it) and
// the device-to-device copy kernel, bandwidth-bound with every SM busy (bench_copy_bandwidth times
// it on shim memory; bench_growth_under_load keeps the GPU busy with it).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench/bench_common.h"

#define CUDA_OK(expr)                                                                  \
  do {                                                                                 \
    const cudaError_t e_ = (expr);                                                     \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "error: %s failed: %s (%s)\n", #expr, cudaGetErrorName(e_), \
                   cudaGetErrorString(e_));                                            \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

namespace kvcached::bench {

// Prints "<title>: SKIPPED: <why>" and the JSON line {"bench": name, "skipped": true, ...} and
// returns true when `device` is not a usable CUDA GPU (the program then exits 0); else false,
// with `device` current and its primary context created (the core Runtime finds that one).
inline bool SkipWithoutGpu(int device, const char* title, const char* name,
                           const std::string& json_out) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaSuccess && count > device) {
    CUDA_OK(cudaSetDevice(device));
    CUDA_OK(cudaFree(nullptr));
    return false;
  }
  const std::string why = e != cudaSuccess
                              ? std::string("no CUDA GPU (") + cudaGetErrorName(e) + ")"
                              : "no CUDA device " + std::to_string(device);
  std::printf("%s: SKIPPED: %s\n", title, why.c_str());
  EmitJson({{"bench", name}, {"skipped", true}, {"reason", why}}, json_out);
  return true;
}

// Four independent 16-byte loads in flight per thread before the stores.
__global__ void CopyKernel(const uint4* __restrict__ src, uint4* __restrict__ dst,
                           unsigned long long n) {
  const unsigned long long stride = 1ULL * gridDim.x * blockDim.x;
  unsigned long long i = blockIdx.x * 1ULL * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    const uint4 a = src[i];
    const uint4 b = src[i + stride];
    const uint4 c = src[i + 2 * stride];
    const uint4 d = src[i + 3 * stride];
    dst[i] = a;
    dst[i + stride] = b;
    dst[i + 2 * stride] = c;
    dst[i + 3 * stride] = d;
  }
  for (; i < n; i += stride) dst[i] = src[i];
}

}  // namespace kvcached::bench
