// Probe of driver facts the design depends on (run once per driver version on a GPU machine):
// can one cuMemUnmap / cuMemSetAccess span several adjacent mappings, and what do map calls cost.
// Build: g++ -O2 -I/usr/local/cuda/include vmm_semantics.cpp -ldl -o vmm_semantics
#include <cuda.h>
#include <dlfcn.h>

#include <chrono>
#include <cstdio>
#include <vector>

#include "probe_common.h"

static CUresult try_(CUresult r, const char* what) {
  const char* n = nullptr;
  cuGetErrorName(r, &n);
  std::printf("%-60s %s\n", what, n ? n : "?");
  return r;
}

int main() {
  const ProbeDevice d = OpenDevice0();
  const CUmemAllocationProp prop = d.prop;
  const CUmemAccessDesc acc = d.acc;
  int ver = 0;
  cuDriverGetVersion(&ver);
  std::printf("driver version %d\n", ver);
  size_t gran = 0;
  CK(cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
  std::printf("granularity %zu\n", gran);
  const size_t n = 4;
  CUdeviceptr va;
  CK(cuMemAddressReserve(&va, n * gran, 0, 0, 0));
  std::vector<CUmemGenericAllocationHandle> h(n);
  for (auto& x : h) CK(cuMemCreate(&x, gran, &prop, 0));
  for (size_t i = 0; i < n; ++i) CK(cuMemMap(va + i * gran, gran, 0, h[i], 0));
  try_(cuMemSetAccess(va, n * gran, &acc, 1), "set access over 4 separate mappings");
  try_(cuMemsetD8(va, 1, n * gran), "memset over 4 mappings");
  try_(cuMemUnmap(va, gran / 2), "unmap half of one mapping");
  try_(cuMemUnmap(va, 2 * gran), "unmap 2 adjacent mappings in one call");
  try_(cuMemUnmap(va + 2 * gran, 2 * gran), "unmap other 2 in one call");
  // Same handle mapped twice (zero-page aliasing).
  for (size_t i = 0; i < n; ++i)
    try_(cuMemMap(va + i * gran, gran, 0, h[0], 0), "map handle 0 again");
  try_(cuMemSetAccess(va, n * gran, &acc, 1), "set access over 4 aliases of one handle");
  try_(cuMemUnmap(va, n * gran), "unmap 4 aliases in one call");
  try_(cuMemMap(va, gran, 0, h[1], 0), "remap page 0");
  try_(cuMemsetD8(va, 2, gran), "memset after remap without set access (expect error)");
  CK(cuCtxSynchronize());
  CK(cuMemUnmap(va, gran));
  for (auto x : h) CK(cuMemRelease(x));
  CK(cuMemAddressFree(va, n * gran));
  // Larger handle sizes: is map+access cost per call?
  for (size_t mb : {2, 8, 32, 128}) {
    size_t sz = mb << 20;
    const int reps = 64;
    CUdeviceptr v;
    CK(cuMemAddressReserve(&v, sz * reps, 0, 0, 0));
    std::vector<CUmemGenericAllocationHandle> hs(reps);
    for (auto& x : hs) CK(cuMemCreate(&x, sz, &prop, 0));
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) CK(cuMemMap(v + i * sz, sz, 0, hs[i], 0));
    auto t1 = std::chrono::steady_clock::now();
    CK(cuMemSetAccess(v, sz * reps, &acc, 1));
    auto t2 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) CK(cuMemUnmap(v + i * sz, sz));
    auto t3 = std::chrono::steady_clock::now();
    auto us = [](auto a, auto b) {
      return std::chrono::duration<double, std::micro>(b - a).count();
    };
    std::printf(
        "page %3zu MiB: map %.1f us/call, one set-access over %d maps %.1f us, unmap %.1f "
        "us/call\n",
        mb, us(t0, t1) / reps, reps, us(t1, t2), us(t2, t3) / reps);
    for (auto x : hs) CK(cuMemRelease(x));
    CK(cuMemAddressFree(v, sz * reps));
  }
  return 0;
}
