// An engine's KV cache growing step by step after an idle spell (one acquire call a step covering
// every KV tensor, then the GPU's turn), and the way back to idle between reps. Shared by
// bench_step_growth (burst reserve off/on) and bench_growth_under_load (GPU idle/busy).
#pragma once

#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_common.h"
#include "core/runtime/runtime.h"

namespace kvcached::bench {

struct GrowthShape {
  int device = 0;
  int pages_per_step = 24;
  int steps = 16;
  double step_ms = 50;  // from one step's start to the next
};

// The driver's VMM call counts, where the driver keeps them: the project's fake driver exports
// fakecuda_call_count (a real libcuda does not), so on the CPU a bench can say how many driver
// calls a page of growth costs (real swap-ins plus the zero-page aliases around them). Make it
// after the runtime has loaded its driver (after the first CreateRegion).
class DriverCalls {
 public:
  static constexpr std::array<const char*, 4> kNames = {"cuMemCreate", "cuMemMap", "cuMemUnmap",
                                                        "cuMemSetAccess"};
  using Counts = std::array<std::uint64_t, kNames.size()>;

  explicit DriverCalls(const Config& c) {
    void* lib = ::dlopen(c.cuda_driver.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (lib == nullptr) return;
    count_ = reinterpret_cast<CountFn>(::dlsym(lib, "fakecuda_call_count"));
    ::dlclose(lib);  // the runtime holds its own reference for as long as it runs
  }
  [[nodiscard]] bool available() const { return count_ != nullptr; }
  [[nodiscard]] Counts Now() const {
    Counts c{};
    if (count_ == nullptr) return c;
    for (std::size_t i = 0; i < kNames.size(); ++i) c[i] = count_(kNames[i]);
    return c;
  }

 private:
  using CountFn = std::uint64_t (*)(const char*);
  CountFn count_ = nullptr;
};

struct GrowthRep {
  double acquire_ms_total = 0;          // the engine's time in acquire calls over the growth
  std::vector<double> acquire_ms_step;  // per step
  std::uint64_t sync_maps = 0;          // pages swapped in on the engine's thread
  std::uint64_t pool_maps = 0;          // pages mapped ahead by the pool's thread
  double wall_s = 0;                    // from the first step's start to the last step's end
  DriverCalls::Counts driver_calls{};   // during the growth (zero unless the driver counts)
};

// Grows every region by `pages_per_step` pages a step from its start; times the acquire calls.
inline GrowthRep GrowSteps(Runtime& rt, const std::vector<std::uint64_t>& bases,
                           const GrowthShape& g, std::uint64_t page,
                           const DriverCalls* calls = nullptr) {
  GrowthRep rep;
  const auto stats0 = Take(rt.Stats(g.device), "Stats");
  const DriverCalls::Counts calls0 = calls != nullptr ? calls->Now() : DriverCalls::Counts{};
  const std::uint64_t step_bytes = page * static_cast<std::uint64_t>(g.pages_per_step);
  std::vector<ByteRange> ranges(bases.size());
  const auto start = Clock::now();
  for (int s = 0; s < g.steps; ++s) {
    const auto step_start = Clock::now();
    for (std::size_t r = 0; r < bases.size(); ++r) {
      ranges[r] = ByteRange{bases[r] + static_cast<std::uint64_t>(s) * step_bytes, step_bytes};
    }
    const auto t0 = Clock::now();
    Check(rt.Acquire(ranges), "Acquire at step " + std::to_string(s));
    const double ms = SecondsSince(t0) * 1e3;
    rep.acquire_ms_step.push_back(ms);
    rep.acquire_ms_total += ms;
    // The GPU runs the step: the engine's thread waits (in vLLM, for the step before).
    while (SecondsSince(step_start) * 1e3 < g.step_ms) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  rep.wall_s = SecondsSince(start);
  const auto stats1 = Take(rt.Stats(g.device), "Stats");
  rep.sync_maps = stats1.sync_maps - stats0.sync_maps;
  rep.pool_maps = (stats1.maps - stats0.maps) - rep.sync_maps;
  if (calls != nullptr) {
    const DriverCalls::Counts calls1 = calls->Now();
    for (std::size_t i = 0; i < calls1.size(); ++i) rep.driver_calls[i] = calls1[i] - calls0[i];
  }
  return rep;
}

// Everything back, as the engine hook's idle trim does, and waits until every region is all ZERO
// again and the pool's hold after a trim is over, so that the next rep starts from an idle engine.
inline void ResetToIdle(Runtime& rt, const std::vector<std::uint64_t>& bases, const GrowthShape& g,
                        std::uint64_t page) {
  const std::uint64_t grown =
      page * static_cast<std::uint64_t>(g.pages_per_step) * static_cast<std::uint64_t>(g.steps);
  std::vector<ByteRange> ranges;
  ranges.reserve(bases.size());
  for (std::uint64_t b : bases) ranges.push_back(ByteRange{b, grown});
  Check(rt.Release(ranges), "Release");
  Check(rt.Trim(g.device), "Trim");
  const bool idle = WaitFor(
      [&] {
        return std::ranges::all_of(bases, [&](std::uint64_t b) {
          const auto i = Take(rt.Info(b), "Info");
          return i.zero_pages == i.pages;
        });
      },
      30.0);
  if (!idle) {
    std::fprintf(stderr, "error: the regions were not all ZERO 30 s after a trim\n");
    std::exit(1);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // past the pool's hold
}

// Bytes each region needs for the growth, or an error message when `region_bytes` is too small.
inline std::string GrowthFits(const GrowthShape& g, std::uint64_t page,
                              std::uint64_t region_bytes) {
  const std::uint64_t need =
      page * static_cast<std::uint64_t>(g.pages_per_step) * static_cast<std::uint64_t>(g.steps);
  if (need <= region_bytes) return {};
  std::array<char, 256> why{};
  std::snprintf(why.data(), why.size(),
                "--steps %d x --pages-per-step %d pages of %llu MiB need %llu MiB per region, "
                "more than --region-gib gives (%llu MiB): fewer steps or larger regions",
                g.steps, g.pages_per_step, static_cast<unsigned long long>(page >> 20),
                static_cast<unsigned long long>(need >> 20),
                static_cast<unsigned long long>(region_bytes >> 20));
  return why.data();
}

}  // namespace kvcached::bench
