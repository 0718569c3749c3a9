// Probe: where the time of a burst goes (backing N pages of a zero-aliased range at once), per
// page and per step: create handles, unmap the zero aliases (one call), map, set access (one call).
// Build: g++ -O2 -I/usr/local/cuda/include burst_costs.cpp -lcuda -lpthread -o burst_costs
#include <cuda.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "probe_common.h"

static double Us(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}
int main() {
  const ProbeDevice d = OpenDevice0();
  const CUcontext ctx = d.ctx;
  const CUmemAllocationProp prop = d.prop;
  const CUmemAccessDesc acc = d.acc;
  const size_t total = size_t{8} << 30;
  std::printf("burst of 8 GiB into a zero-aliased range, per page (us)\n");
  std::printf("page_MiB  create  unmap_run  map  set_access  sum  GB/s | create_in_thread GB/s\n");
  for (size_t mb : {2, 8, 32}) {
    const size_t page = mb << 20, n = total / page;
    CUdeviceptr va;
    CK(cuMemAddressReserve(&va, total, 0, 0, 0));
    CUmemGenericAllocationHandle zero;
    CK(cuMemCreate(&zero, page, &prop, 0));
    for (size_t i = 0; i < n; ++i) CK(cuMemMap(va + i * page, page, 0, zero, 0));
    CK(cuMemSetAccess(va, total, &acc, 1));
    std::vector<CUmemGenericAllocationHandle> h(n);
    auto t0 = std::chrono::steady_clock::now();
    for (auto& x : h) CK(cuMemCreate(&x, page, &prop, 0));
    auto t1 = std::chrono::steady_clock::now();
    CK(cuMemUnmap(va, total));
    auto t2 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < n; ++i) CK(cuMemMap(va + i * page, page, 0, h[i], 0));
    auto t3 = std::chrono::steady_clock::now();
    CK(cuMemSetAccess(va, total, &acc, 1));
    auto t4 = std::chrono::steady_clock::now();
    double c = Us(t0, t1) / n, u = Us(t1, t2) / n, m = Us(t2, t3) / n, a = Us(t3, t4) / n;
    double sum = c + u + m + a;
    // Same again with creation on a second thread, pipelined with map + set access in chunks.
    CK(cuMemUnmap(va, total));
    for (auto x : h) CK(cuMemRelease(x));
    for (size_t i = 0; i < n; ++i) CK(cuMemMap(va + i * page, page, 0, zero, 0));
    CK(cuMemSetAccess(va, total, &acc, 1));
    std::vector<CUmemGenericAllocationHandle> h2(n);
    std::vector<std::atomic<int>> ready(n);
    auto p0 = std::chrono::steady_clock::now();
    std::thread creator([&] {
      CK(cuCtxSetCurrent(ctx));
      for (size_t i = 0; i < n; ++i) {
        CK(cuMemCreate(&h2[i], page, &prop, 0));
        ready[i].store(1, std::memory_order_release);
      }
    });
    const size_t chunk = 64;
    for (size_t i = 0; i < n; i += chunk) {
      size_t e = std::min(n, i + chunk);
      while (!ready[e - 1].load(std::memory_order_acquire)) std::this_thread::yield();
      CK(cuMemUnmap(va + i * page, (e - i) * page));
      for (size_t k = i; k < e; ++k) CK(cuMemMap(va + k * page, page, 0, h2[k], 0));
      CK(cuMemSetAccess(va + i * page, (e - i) * page, &acc, 1));
    }
    auto p1 = std::chrono::steady_clock::now();
    creator.join();
    std::printf("%8zu  %6.1f  %9.2f  %4.1f  %10.1f  %5.1f  %5.1f | %.1f\n", mb, c, u, m, a, sum,
                page / (sum * 1e3), total / (Us(p0, p1) * 1e3));
    CK(cuMemUnmap(va, total));
    for (auto x : h2) CK(cuMemRelease(x));
    CK(cuMemRelease(zero));
    CK(cuMemAddressFree(va, total));
  }
  return 0;
}
