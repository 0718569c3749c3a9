// Burst backing rate: one Acquire of a large contiguous range of a lazy region (every page ZERO),
// timed, at several page sizes. GB/s = bytes / seconds / 1e9, median of several reps with a
// release + trim between them. Targets: 2 MiB pages >= 40 GB/s, 32 MiB pages >= 500 GB/s.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "bench/bench_common.h"
#include "core/runtime/runtime.h"

namespace kb = kvcached::bench;
using kvcached::ByteRange;
using kvcached::Runtime;

namespace {

struct Options {
  int device = 0;
  std::vector<std::size_t> page_mb{2, 8, 32};
  double gib = 0;  // 0: 8 GiB on the real driver, 0.5 GiB on a custom (fake) one
  int reps = 5;
  std::string json_out;
};

struct PageResult {
  std::size_t page_mb = 0;
  std::vector<double> gbps;
};

// Two sources of physical pages for the burst:
//  cold:    every page is created (cuMemCreate) inside the burst; Trim between reps returns them
//           to the driver. Bounded by the driver: create + unmap + map + set-access per page.
//  reserve: the pool already holds the burst's pages (KVCACHED_PAGE_PREALLOC_ENABLED with
//           KVCACHED_MIN_RESERVED_PAGES sized to the burst), as an operator configures an engine
//           that must absorb bursts; released pages go back to the reserve by deferred trim.
PageResult RunPageSize(kvcached::Config c, std::size_t page_mb, std::uint64_t bytes,
                       const Options& o, bool from_reserve) {
  c.page_size_mb = page_mb;
  c.map_ahead_pages = 0;  // only the foreground burst is measured
  c.trim_delay_ms = 0;
  const std::uint64_t page = c.page_size();
  bytes = (bytes + page - 1) / page * page;
  if (from_reserve) {
    c.page_prealloc = true;
    c.min_reserved_pages = c.max_reserved_pages = bytes / page;
  }
  auto rt = kb::Take(Runtime::Create(c), "Runtime::Create");
  const std::uint64_t base =
      kb::Take(rt->CreateRegion(o.device, bytes, kvcached::RegionKind::kLazy), "CreateRegion");
  const ByteRange r{base, bytes};

  PageResult res{page_mb, {}};
  for (int rep = -1; rep < o.reps; ++rep) {  // rep -1 is the untimed warm-up
    // Trim skips pages the background thread is swapping out at that moment: wait for it.
    (void)kb::WaitFor(
        [&] {
          const auto i = kb::Take(rt->Info(base), "Info");
          return i.zero_pages == i.pages &&
                 (!from_reserve || kb::Take(rt->Stats(o.device), "Stats").pool_bytes >= bytes);
        },
        60.0);
    const auto info0 = kb::Take(rt->Info(base), "Info");
    if (info0.zero_pages != info0.pages) {
      std::fprintf(stderr,
                   "error: before rep %d, %llu of %llu pages are not ZERO (%llu in use, %llu "
                   "mapped free) 5 s after the last rep released and trimmed them\n",
                   rep, static_cast<unsigned long long>(info0.pages - info0.zero_pages),
                   static_cast<unsigned long long>(info0.pages),
                   static_cast<unsigned long long>(info0.in_use_pages),
                   static_cast<unsigned long long>(info0.mapped_free_pages));
      std::exit(1);
    }
    const auto t0 = kb::Clock::now();
    const kvcached::Status st = rt->Acquire({&r, 1});
    const double s = kb::SecondsSince(t0);
    kb::Check(st, "Acquire of " + std::to_string(bytes >> 20) + " MiB");
    const auto info1 = kb::Take(rt->Info(base), "Info");
    if (info1.in_use_pages != info1.pages) {
      std::fprintf(stderr, "error: acquire left %llu pages not in use\n",
                   static_cast<unsigned long long>(info1.pages - info1.in_use_pages));
      std::exit(1);
    }
    if (rep >= 0) res.gbps.push_back(static_cast<double>(bytes) / s / 1e9);
    kb::Check(rt->Release({&r, 1}), "Release");
    if (!from_reserve) kb::Check(rt->Trim(o.device), "Trim");
  }
  kb::Check(rt->DestroyRegion(base), "DestroyRegion");
  return res;
}

int Run(int argc, char** argv) {
  Options o;
  CLI::App app{"Burst backing rate: one acquire of a large range, per page size"};
  app.add_option("--device", o.device, "GPU ordinal")->check(CLI::NonNegativeNumber);
  app.add_option("--page-mb", o.page_mb, "page sizes in MiB (even, 2..1024)")
      ->delimiter(',')
      ->check(CLI::Range(2, 1024));
  app.add_option("--gib", o.gib, "bytes acquired per rep, GiB (default 8; 0.5 on a fake driver)")
      ->check(CLI::Range(0.0, 1024.0));
  app.add_option("--reps", o.reps)->check(CLI::Range(1, 1000));
  app.add_option("--json-out", o.json_out, "also write the JSON line to this file");
  CLI11_PARSE(app, argc, argv);
  for (std::size_t mb : o.page_mb) {
    if (mb % 2 != 0) {
      std::fprintf(stderr, "error: --page-mb %zu: page sizes must be even (2, 4, ... 1024)\n", mb);
      return 2;
    }
  }

  const kvcached::Config cfg = kb::EnvConfig();
  const double gib = o.gib > 0 ? o.gib : (kb::CustomDriver(cfg) ? 0.5 : 8.0);
  const auto bytes = static_cast<std::uint64_t>(gib * static_cast<double>(1ULL << 30));
  std::printf("burst backing: %.2f GiB per acquire, %d reps, %s\n", gib, o.reps,
              kb::DriverLabel(cfg).c_str());
  std::printf("  %-8s %10s %10s %10s\n", "page_mb", "med_GB/s", "min_GB/s", "max_GB/s");

  const std::map<std::size_t, double> targets{{2, 40.0}, {32, 500.0}};
  nlohmann::json results = nlohmann::json::array();
  nlohmann::json checks = nlohmann::json::array();
  nlohmann::json info = nlohmann::json::array();
  for (const bool from_reserve : {false, true}) {
    const std::string source = from_reserve ? "reserve" : "cold";
    for (std::size_t mb : o.page_mb) {
      const PageResult r = RunPageSize(cfg, mb, bytes, o, from_reserve);
      const double med = kb::Median(r.gbps);
      std::printf("  %-8zu %10.1f %10.1f %10.1f  (%s)\n", mb, med, kb::Percentile(r.gbps, 0),
                  kb::Percentile(r.gbps, 100), source.c_str());
      results.push_back(
          {{"page_mb", mb}, {"source", source}, {"median_gbps", med}, {"gbps", r.gbps}});
      const std::string name = "burst_" + source + "_" + std::to_string(mb) + "MiB_GBps";
      // The targets are for bursts served from the reserve: a cold burst also pays cuMemCreate,
      // and the driver alone then caps 2 MiB pages near 33 GB/s (docs/driver-facts.md).
      if (auto it = targets.find(mb); from_reserve && it != targets.end()) {
        checks.push_back(kb::MakeCheck(name, med, "GB/s", ">=", it->second));
      } else {
        info.push_back(kb::MakeInfo(name, med, "GB/s"));
      }
    }
  }
  const bool pass = kb::PrintChecks(checks);
  kb::EmitJson({{"bench", "burst_backing"},
                {"driver", kb::DriverLabel(cfg)},
                {"bytes", bytes},
                {"reps", o.reps},
                {"results", results},
                {"checks", checks},
                {"info", info},
                {"pass", pass}},
               o.json_out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return kb::Main(argc, argv, Run);
}
