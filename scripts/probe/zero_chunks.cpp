// Probe: does aliasing unbacked pages with multi-page zero mappings (one zero handle of K pages,
// mapped once per K-page chunk) cut the cost of backing a burst, and what does a partial chunk
// cost? cuMemUnmap is paid per mapping, so a burst over K-page zero mappings unmaps K times fewer
// mappings. Also checks that a mapping may cover only a prefix of a larger handle (re-aliasing
// what remains of a chunk with the same zero handle).
//   prefix      cuMemMap of 2 MiB / 4 MiB of an 8 MiB handle: allowed?
//   burst K=k   8 GiB aliased in K-page zero mappings; one unmap of the run, one map per page,
//               one set-access; median of 3 reps, us per page and GB/s
//   holes       no zero alias (the floor)
//   single K=4  back the first page of a fresh 4-page chunk (unmap chunk, map page, re-alias the
//               other three with a 1-page and a 2-page zero handle, one set-access); median of 64.
//               (Run 1 of 2026-11-25 tried this with prefixes of the 4-page handle: refused.)
//   setup K=k   alias 64 GiB (maps + one set-access)
// Build: g++ -O2 -std=c++20 -I/usr/local/cuda/include zero_chunks.cpp -lcuda
#include <cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "probe_common.h"

namespace {

using Clock = std::chrono::steady_clock;

CUmemAllocationProp g_prop{};
CUmemAccessDesc g_acc{};

double Us(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Aliases [va, va + n*page) with zero mappings of k pages each (n divisible by k).
void Alias(CUdeviceptr va, std::size_t n, std::size_t page, std::size_t k,
           CUmemGenericAllocationHandle zero) {
  for (std::size_t i = 0; i < n; i += k) CK(cuMemMap(va + i * page, k * page, 0, zero, 0));
  CK(cuMemSetAccess(va, n * page, &g_acc, 1));
}

}  // namespace

int main() {
  const ProbeDevice d = OpenDevice0();
  g_prop = d.prop;
  g_acc = d.acc;
  constexpr std::size_t kMiB = std::size_t{1} << 20;

  {  // prefix mappings
    CUmemGenericAllocationHandle z;
    CK(cuMemCreate(&z, 8 * kMiB, &g_prop, 0));
    CUdeviceptr va;
    CK(cuMemAddressReserve(&va, 16 * kMiB, 0, 0, 0));
    CUresult a = cuMemMap(va, 2 * kMiB, 0, z, 0);
    CUresult b = cuMemMap(va + 2 * kMiB, 4 * kMiB, 0, z, 0);
    CUresult c = cuMemSetAccess(va, 6 * kMiB, &g_acc, 1);
    CUresult d = cuMemsetD8(va, 0x5a, 6 * kMiB);
    CUresult e = cuCtxSynchronize();
    std::printf(
        "prefix: map 2 of 8 MiB -> %d, map 4 of 8 MiB -> %d, access -> %d, memset -> %d/%d\n",
        (int)a, (int)b, (int)c, (int)d, (int)e);
    if (a == CUDA_SUCCESS) CK(cuMemUnmap(va, 2 * kMiB));
    if (b == CUDA_SUCCESS) CK(cuMemUnmap(va + 2 * kMiB, 4 * kMiB));
    CK(cuMemAddressFree(va, 16 * kMiB));
    CK(cuMemRelease(z));
  }

  const std::size_t total = std::size_t{8} << 30;
  std::printf("%-8s %-10s %9s %9s\n", "page_MiB", "variant", "us/page", "GB/s");
  for (std::size_t mb : {2, 32}) {
    const std::size_t page = mb * kMiB;
    const std::size_t n = total / page;
    CUdeviceptr va;
    CK(cuMemAddressReserve(&va, total, 0, 0, 0));
    std::vector<CUmemGenericAllocationHandle> h(n);
    for (auto& x : h) CK(cuMemCreate(&x, page, &g_prop, 0));
    auto burst = [&](std::size_t k, bool aliased) {
      CUmemGenericAllocationHandle zero = 0;
      if (aliased) CK(cuMemCreate(&zero, k * page, &g_prop, 0));
      std::vector<double> us;
      for (int rep = 0; rep < 3; ++rep) {
        if (aliased) Alias(va, n, page, k, zero);
        const auto t0 = Clock::now();
        if (aliased) CK(cuMemUnmap(va, total));
        for (std::size_t i = 0; i < n; ++i) CK(cuMemMap(va + i * page, page, 0, h[i], 0));
        CK(cuMemSetAccess(va, total, &g_acc, 1));
        us.push_back(Us(t0, Clock::now()) / static_cast<double>(n));
        CK(cuMemUnmap(va, total));
      }
      if (aliased) CK(cuMemRelease(zero));
      const double m = Median(us);
      char name[32];
      std::snprintf(name, sizeof name, aliased ? "K=%zu" : "holes", k);
      std::printf("%-8zu %-10s %9.1f %9.1f\n", mb, name, m, static_cast<double>(page) / m / 1e3);
      std::fflush(stdout);
    };
    for (std::size_t k : {1, 2, 4, 8, 16}) {
      if (mb == 32 && k > 4) continue;
      burst(k, true);
    }
    burst(1, false);
    for (auto x : h) CK(cuMemRelease(x));
    CK(cuMemAddressFree(va, total));
  }

  {  // one page of a fresh 4-page chunk, 2 MiB pages
    const std::size_t page = 2 * kMiB, k = 4, chunks = 64;
    CUdeviceptr va;
    CK(cuMemAddressReserve(&va, chunks * k * page, 0, 0, 0));
    // One zero handle per alias size (a handle is only mapped whole), as the shim does.
    CUmemGenericAllocationHandle zero, zero1, zero2, real;
    CK(cuMemCreate(&zero, k * page, &g_prop, 0));
    CK(cuMemCreate(&zero1, page, &g_prop, 0));
    CK(cuMemCreate(&zero2, 2 * page, &g_prop, 0));
    CK(cuMemCreate(&real, page, &g_prop, 0));
    std::vector<double> one, one_k1;
    for (std::size_t c = 0; c < chunks; ++c) {
      const CUdeviceptr at = va + c * k * page;
      CK(cuMemMap(at, k * page, 0, zero, 0));
      CK(cuMemSetAccess(at, k * page, &g_acc, 1));
      const auto t0 = Clock::now();
      CK(cuMemUnmap(at, k * page));
      CK(cuMemMap(at, page, 0, real, 0));
      CK(cuMemMap(at + page, page, 0, zero1, 0));
      CK(cuMemMap(at + 2 * page, 2 * page, 0, zero2, 0));
      CK(cuMemSetAccess(at, k * page, &g_acc, 1));
      one.push_back(Us(t0, Clock::now()));
      CK(cuMemUnmap(at, k * page));
      // K=1 reference: swap one page whose alias is its own mapping.
      CK(cuMemMap(at, page, 0, zero1, 0));
      CK(cuMemSetAccess(at, page, &g_acc, 1));
      const auto t1 = Clock::now();
      CK(cuMemUnmap(at, page));
      CK(cuMemMap(at, page, 0, real, 0));
      CK(cuMemSetAccess(at, page, &g_acc, 1));
      one_k1.push_back(Us(t1, Clock::now()));
      CK(cuMemUnmap(at, page));
    }
    std::printf("single page swap-in, 2 MiB: K=4 chunk %.1f us, K=1 %.1f us (median of %zu)\n",
                Median(one), Median(one_k1), chunks);
    for (auto x : {zero, zero1, zero2, real}) CK(cuMemRelease(x));
    CK(cuMemAddressFree(va, chunks * k * page));
  }

  {  // 64 GiB set-up with 2 MiB pages
    const std::size_t page = 2 * kMiB, size = std::size_t{64} << 30, n = size / page;
    CUdeviceptr va;
    CK(cuMemAddressReserve(&va, size, 0, 0, 0));
    for (std::size_t k : {1, 4, 16}) {
      CUmemGenericAllocationHandle zero;
      CK(cuMemCreate(&zero, k * page, &g_prop, 0));
      const auto t0 = Clock::now();
      Alias(va, n, page, k, zero);
      const double ms = Us(t0, Clock::now()) / 1e3;
      std::printf("setup 64 GiB, K=%zu: %.1f ms\n", k, ms);
      CK(cuMemUnmap(va, size));
      CK(cuMemRelease(zero));
    }
    CK(cuMemAddressFree(va, size));
  }
  return 0;
}
