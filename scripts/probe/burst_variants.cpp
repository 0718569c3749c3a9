// Probe: which driver-side conditions make backing a burst of pages from a reserve slower than the
// floor measured by burst_costs.cpp (fresh handles, mapped in creation order). Each variant backs
// the same 8 GiB zero-aliased range from already-created handles (no cuMemCreate inside the
// timing), median of 3 reps, and prints us per page and GB/s.
//   fresh-fwd   handles just created, page i gets handle i (the burst_costs.cpp floor)
//   reuse-fwd   the same handles again after a shim-style swap-out (unmap run, re-alias zero)
//   reuse-rev   reused, page i gets handle n-1-i (the pool's LIFO free list after a swap-out)
//   unmap-each  reused forward, one cuMemUnmap per page instead of one for the run
//   access-each reused forward, one cuMemSetAccess per page right after its map
//   two-threads reused forward, two threads each backing half the range
//   holes       no zero alias: the range is unmapped; map + set-access only
// Build: g++ -O2 -std=c++20 -I/usr/local/cuda/include burst_variants.cpp -lcuda -lpthread
#include <cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "probe_common.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Setup {
  CUcontext ctx{};
  CUmemAllocationProp prop{};
  CUmemAccessDesc acc{};
  std::size_t page = 0, n = 0;
  CUdeviceptr va = 0;
  CUmemGenericAllocationHandle zero = 0;
  std::vector<CUmemGenericAllocationHandle> h;

  CUdeviceptr At(std::size_t i) const { return va + i * page; }
  void AliasZero(std::size_t lo, std::size_t hi) const {
    for (std::size_t i = lo; i < hi; ++i) CK(cuMemMap(At(i), page, 0, zero, 0));
    CK(cuMemSetAccess(At(lo), (hi - lo) * page, &acc, 1));
  }
  // As the shim's SwapOut: one unmap for the run, re-alias each page, one set-access.
  void SwapOut() const {
    CK(cuMemUnmap(va, n * page));
    AliasZero(0, n);
  }
  void Unalias() const { CK(cuMemUnmap(va, n * page)); }
};

// Backs pages [lo, hi) with handles perm[lo..hi) the way the shim's SwapInRun does.
void SwapIn(const Setup& s, const std::vector<std::size_t>& perm, std::size_t lo, std::size_t hi,
            bool unmap_run, bool access_each, bool aliased) {
  if (aliased) {
    if (unmap_run) {
      CK(cuMemUnmap(s.At(lo), (hi - lo) * s.page));
    }
  }
  for (std::size_t i = lo; i < hi; ++i) {
    if (aliased && !unmap_run) CK(cuMemUnmap(s.At(i), s.page));
    CK(cuMemMap(s.At(i), s.page, 0, s.h[perm[i]], 0));
    if (access_each) CK(cuMemSetAccess(s.At(i), s.page, &s.acc, 1));
  }
  if (!access_each) CK(cuMemSetAccess(s.At(lo), (hi - lo) * s.page, &s.acc, 1));
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main() {
  const ProbeDevice d = OpenDevice0();
  Setup s;
  s.ctx = d.ctx;
  s.prop = d.prop;
  s.acc = d.acc;
  const std::size_t total = std::size_t{8} << 30;
  std::printf("burst variants: 8 GiB from created handles, median of 3 reps, per page\n");
  std::printf("%-8s %-12s %9s %9s\n", "page_MiB", "variant", "us/page", "GB/s");
  for (std::size_t mb : {2, 32}) {
    s.page = mb << 20;
    s.n = total / s.page;
    CK(cuMemAddressReserve(&s.va, total, 0, 0, 0));
    CK(cuMemCreate(&s.zero, s.page, &s.prop, 0));
    s.AliasZero(0, s.n);
    s.h.assign(s.n, 0);
    std::vector<std::size_t> fwd(s.n), rev(s.n);
    for (std::size_t i = 0; i < s.n; ++i) fwd[i] = i, rev[i] = s.n - 1 - i;

    auto report = [&](const char* name, const std::function<void()>& before,
                      const std::function<void()>& burst) {
      std::vector<double> us;
      for (int rep = 0; rep < 3; ++rep) {
        before();
        const auto t0 = Clock::now();
        burst();
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() /
                     static_cast<double>(s.n));
      }
      const double m = Median(us);
      std::printf("%-8zu %-12s %9.1f %9.1f\n", mb, name, m, static_cast<double>(s.page) / m / 1e3);
      std::fflush(stdout);
    };
    auto all = [&](const std::vector<std::size_t>& perm, bool unmap_run, bool access_each) {
      return [&, unmap_run, access_each] { SwapIn(s, perm, 0, s.n, unmap_run, access_each, true); };
    };

    bool first = true;
    report(
        "fresh-fwd",
        [&] {
          if (!first) {
            s.SwapOut();
            for (auto x : s.h) CK(cuMemRelease(x));
          }
          first = false;
          for (auto& x : s.h) CK(cuMemCreate(&x, s.page, &s.prop, 0));
        },
        all(fwd, true, false));
    report(
        "reuse-fwd", [&] { s.SwapOut(); }, all(fwd, true, false));
    report(
        "reuse-rev", [&] { s.SwapOut(); }, all(rev, true, false));
    report(
        "unmap-each", [&] { s.SwapOut(); }, all(fwd, false, false));
    report(
        "access-each", [&] { s.SwapOut(); }, all(fwd, true, true));
    report(
        "two-threads", [&] { s.SwapOut(); },
        [&] {
          std::thread t([&] {
            CK(cuCtxSetCurrent(s.ctx));
            SwapIn(s, fwd, s.n / 2, s.n, true, false, true);
          });
          SwapIn(s, fwd, 0, s.n / 2, true, false, true);
          t.join();
        });
    report(
        "holes", [&] { CK(cuMemUnmap(s.va, s.n * s.page)); },
        [&] { SwapIn(s, fwd, 0, s.n, true, false, false); });
    s.Unalias();
    for (auto x : s.h) CK(cuMemRelease(x));
    CK(cuMemRelease(s.zero));
    CK(cuMemAddressFree(s.va, total));
  }
  return 0;
}
