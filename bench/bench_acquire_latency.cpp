// Foreground Runtime::Acquire latency, one page per call, on a warm region (the page was mapped
// ahead by the pool's background thread) and on a cold one (map-ahead off: every acquire swaps
// the zero page for a real page on the caller's thread); and the cost of a refused engine step
// (16 regions, budget full). Target: warm p50 < 1 us.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "bench/bench_common.h"
#include "core/runtime/runtime.h"

namespace kb = kvcached::bench;
using kvcached::ByteRange;
using kvcached::PageState;
using kvcached::Runtime;

namespace {

struct Options {
  int device = 0;
  int warm_samples = 5000;
  int cold_samples = 1000;
  int refused_samples = 1000;
  std::size_t map_ahead = 4;
  std::string json_out;
};

struct Phase {
  std::vector<double> us;
  std::uint64_t sync_maps = 0;  // swaps done on the caller's thread during the timed calls
};

std::unique_ptr<Runtime> MakeRuntime(kvcached::Config c) {
  return kb::Take(Runtime::Create(std::move(c)), "Runtime::Create");
}

std::uint64_t SyncMaps(Runtime& rt, int device) {
  return kb::Take(rt.Stats(device), "Runtime::Stats").sync_maps;
}

// Times Acquire of one page then (untimed) Release it.
double TimeOnePage(Runtime& rt, std::uint64_t addr, std::uint64_t page) {
  const ByteRange r{addr, page};
  const auto t0 = kb::Clock::now();
  const kvcached::Status st = rt.Acquire({&r, 1});
  const double us = kb::SecondsSince(t0) * 1e6;
  kb::Check(st, "Runtime::Acquire");
  kb::Check(rt.Release({&r, 1}), "Runtime::Release");
  return us;
}

// Warm: before each sample, wait (untimed) until some page is MAPPED_FREE, then time its acquire.
Phase RunWarm(const kvcached::Config& base, const Options& o) {
  kvcached::Config c = base;
  c.map_ahead_pages = o.map_ahead;
  c.trim_delay_ms = 60000;  // released pages stay mapped: the steady state of a busy engine
  auto rt = MakeRuntime(c);
  const std::uint64_t page = c.page_size();
  const std::uint64_t pages = 64;
  const std::uint64_t base_addr = kb::Take(
      rt->CreateRegion(o.device, pages * page, kvcached::RegionKind::kLazy), "CreateRegion");
  (void)TimeOnePage(*rt, base_addr, page);  // first use: starts the pool and map-ahead

  Phase ph;
  std::uint64_t cursor = 0;
  const std::uint64_t sync0 = SyncMaps(*rt, o.device);
  for (int i = 0; i < o.warm_samples; ++i) {
    std::uint64_t found = pages;
    const bool ok = kb::WaitFor(
        [&] {
          for (std::uint64_t k = 0; k < pages; ++k) {
            const std::uint64_t p = (cursor + k) % pages;
            auto st = rt->PageStateAt(base_addr + p * page);
            if (st.ok() && st.value() == PageState::kMappedFree) {
              found = p;
              return true;
            }
          }
          return false;
        },
        5.0);
    if (!ok) {
      std::fprintf(stderr,
                   "error: no page was mapped ahead within 5 s (map-ahead %zu pages); is the "
                   "pool's background thread running?\n",
                   c.map_ahead_pages);
      std::exit(1);
    }
    ph.us.push_back(TimeOnePage(*rt, base_addr + found * page, page));
    cursor = found + 1;
  }
  ph.sync_maps = SyncMaps(*rt, o.device) - sync0;
  kb::Check(rt->DestroyRegion(base_addr), "DestroyRegion");
  return ph;
}

// Cold: map-ahead off; each sample acquires a page never touched before (state ZERO).
Phase RunCold(const kvcached::Config& base, const Options& o) {
  kvcached::Config c = base;
  c.map_ahead_pages = 0;
  c.trim_delay_ms = 0;  // released pages go back at once, so physical use stays small
  auto rt = MakeRuntime(c);
  const std::uint64_t page = c.page_size();
  const auto pages = static_cast<std::uint64_t>(o.cold_samples) + 1;
  const std::uint64_t base_addr = kb::Take(
      rt->CreateRegion(o.device, pages * page, kvcached::RegionKind::kLazy), "CreateRegion");
  (void)TimeOnePage(*rt, base_addr + (pages - 1) * page, page);  // warm the driver path up

  Phase ph;
  const std::uint64_t sync0 = SyncMaps(*rt, o.device);
  for (std::uint64_t p = 0; p + 1 < pages; ++p) {
    const std::uint64_t addr = base_addr + p * page;
    if (kb::Take(rt->PageStateAt(addr), "PageStateAt") != PageState::kZero) continue;
    ph.us.push_back(TimeOnePage(*rt, addr, page));
  }
  ph.sync_maps = SyncMaps(*rt, o.device) - sync0;
  kb::Check(rt->DestroyRegion(base_addr), "DestroyRegion");
  return ph;
}

// Refused: an engine step that asks for two pages in each of 16 layers' regions while the budget
// is full (the step waits for memory, and is repeated every step). Each region keeps 1 page
// mapped ahead, as an engine's regions do, which stealing could take but not enough of them to
// complete the request. The refusal must be cheap: no page is created, mapped or unmapped.
Phase RunRefused(const kvcached::Config& base, const Options& o) {
  constexpr std::uint64_t kLayers = 16;
  constexpr std::uint64_t kPagesPerLayer = 8;
  kvcached::Config c = base;
  c.map_ahead_pages = 1;
  c.trim_delay_ms = 60000;
  c.page_prealloc = false;
  c.min_reserved_pages = 0;
  c.max_reserved_pages = 0;
  const std::uint64_t page = c.page_size();
  // The zero page, 4 pages in use and 1 mapped ahead in each layer.
  c.budget_bytes = page * (1 + kLayers * 5);
  auto rt = MakeRuntime(c);
  std::vector<std::uint64_t> layers;
  for (std::uint64_t i = 0; i < kLayers; ++i) {
    layers.push_back(
        kb::Take(rt->CreateRegion(o.device, kPagesPerLayer * page, kvcached::RegionKind::kLazy),
                 "CreateRegion"));
  }
  for (std::uint64_t base_addr : layers) {
    const ByteRange used{base_addr, 4 * page};
    kb::Check(rt->Acquire({&used, 1}), "Runtime::Acquire (fill)");
  }
  (void)kb::WaitFor(
      [&] {
        for (std::uint64_t base_addr : layers) {
          if (kb::Take(rt->Info(base_addr), "Info").mapped_free_pages < 1) return false;
        }
        return true;
      },
      10.0);
  std::vector<ByteRange> step;
  step.reserve(layers.size());
  for (std::uint64_t base_addr : layers) step.push_back({base_addr + 6 * page, 2 * page});
  Phase ph;
  const std::uint64_t sync0 = SyncMaps(*rt, o.device);
  for (int i = 0; i < o.refused_samples; ++i) {
    const auto t0 = kb::Clock::now();
    const kvcached::Status st = rt->Acquire(step);
    ph.us.push_back(kb::SecondsSince(t0) * 1e6);
    if (st.code() != kvcached::Errc::kNoMemory) {
      std::fprintf(stderr, "error: the refused-step acquire returned '%s', not a refusal\n",
                   st.message().c_str());
      std::exit(1);
    }
  }
  ph.sync_maps = SyncMaps(*rt, o.device) - sync0;
  for (std::uint64_t base_addr : layers) kb::Check(rt->DestroyRegion(base_addr), "DestroyRegion");
  return ph;
}

nlohmann::json Summary(const Phase& ph) {
  return {{"samples", ph.us.size()},
          {"p50_us", kb::Median(ph.us)},
          {"p99_us", kb::Percentile(ph.us, 99)},
          {"max_us", kb::Percentile(ph.us, 100)},
          {"sync_maps", ph.sync_maps}};
}

int Run(int argc, char** argv) {
  Options o;
  CLI::App app{"Foreground acquire latency (one page per call): warm (mapped ahead) vs cold"};
  app.add_option("--device", o.device, "GPU ordinal")->check(CLI::NonNegativeNumber);
  app.add_option("--warm-samples", o.warm_samples)->check(CLI::Range(10, 10000000));
  app.add_option("--cold-samples", o.cold_samples)->check(CLI::Range(10, 1000000));
  app.add_option("--refused-samples", o.refused_samples)->check(CLI::Range(10, 1000000));
  app.add_option("--map-ahead", o.map_ahead, "pages mapped ahead in the warm run")
      ->check(CLI::Range(1, 1024));
  app.add_option("--json-out", o.json_out, "also write the JSON line to this file");
  CLI11_PARSE(app, argc, argv);

  const kvcached::Config cfg = kb::EnvConfig();
  std::printf("acquire latency: page %zu MiB, %s\n", cfg.page_size_mb,
              kb::DriverLabel(cfg).c_str());
  const Phase warm = RunWarm(cfg, o);
  const Phase cold = RunCold(cfg, o);
  const Phase refused = RunRefused(cfg, o);

  std::printf("  %-7s %8s %10s %10s %10s %10s\n", "mode", "samples", "p50_us", "p99_us", "max_us",
              "sync_maps");
  for (const auto& [name, ph] :
       {std::pair{"warm", &warm}, std::pair{"cold", &cold}, std::pair{"refused", &refused}}) {
    std::printf("  %-7s %8zu %10.3f %10.3f %10.3f %10llu\n", name, ph->us.size(),
                kb::Median(ph->us), kb::Percentile(ph->us, 99), kb::Percentile(ph->us, 100),
                static_cast<unsigned long long>(ph->sync_maps));
  }
  nlohmann::json checks = nlohmann::json::array();
  checks.push_back(kb::MakeCheck("warm_acquire_p50_us", kb::Median(warm.us), "us", "<", 1.0));
  const bool pass = kb::PrintChecks(checks);
  if (warm.sync_maps != 0) {
    std::printf("  note: %llu warm acquires swapped synchronously (map-ahead missed)\n",
                static_cast<unsigned long long>(warm.sync_maps));
  }
  kb::EmitJson(
      {{"bench", "acquire_latency"},
       {"driver", kb::DriverLabel(cfg)},
       {"page_size_mb", cfg.page_size_mb},
       {"warm", Summary(warm)},
       {"cold", Summary(cold)},
       {"refused", Summary(refused)},
       {"checks", checks},
       {"info",
        {kb::MakeInfo("warm_acquire_p99_us", kb::Percentile(warm.us, 99), "us"),
         kb::MakeInfo("cold_acquire_p50_us", kb::Median(cold.us), "us"),
         kb::MakeInfo("cold_acquire_p99_us", kb::Percentile(cold.us, 99), "us"),
         kb::MakeInfo("refused_16_layer_step_p50_us", kb::Median(refused.us), "us"),
         kb::MakeInfo("refused_16_layer_step_p99_us", kb::Percentile(refused.us, 99), "us")}},
       {"pass", pass}},
      o.json_out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return kb::Main(argc, argv, Run);
}
