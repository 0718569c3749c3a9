// Step growth: an engine's KV cache growing step by step after an idle spell, as a vLLM server's
// first prefill steps of a load grow it (one acquire call a step covering every KV tensor, then
// the GPU runs the step). Times the engine's side of each step (the acquire call), with the
// demand-following map-ahead reserve off (KVCACHED_MAP_AHEAD_BURST_PAGES=0) and on, alternating
// in one run. On an H200, vLLM serving an 8B-shaped model (32 KV tensors) backed about 24 pages
// of 2 MiB per tensor a step, steps tens of ms apart, and spent ~0.6 s of its scheduler's time
// per load in these calls (docs/results/2026-12-05-h200-third-session.md). To compare page sizes,
// run it with KVCACHED_PAGE_SIZE_MB=P and --pages-per-step scaled to the same bytes (an H100:
// docs/performance.md, "Step growth").
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <vector>

#include "bench/bench_common.h"
#include "bench/step_growth.h"
#include "core/runtime/runtime.h"

namespace kb = kvcached::bench;
using kvcached::Runtime;

namespace {

struct Options {
  kb::GrowthShape shape;
  int regions = 32;
  double region_gib = 0;  // 0: 1 GiB on the real driver, 1/32 GiB on a custom (fake) one
  int reps = 5;
  std::size_t burst_pages = 64;
  std::string json_out;
};

int Run(int argc, char** argv) {
  Options o;
  CLI::App app{"Step growth: acquire calls of a cache growing step by step, burst reserve off/on"};
  app.add_option("--device", o.shape.device, "GPU ordinal")->check(CLI::NonNegativeNumber);
  app.add_option("--regions", o.regions, "KV tensors (one lazy region each)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--region-gib", o.region_gib, "size of each region, GiB (default 1; fake: 1/32)")
      ->check(CLI::Range(0.0, 64.0));
  app.add_option("--pages-per-step", o.shape.pages_per_step, "pages each region grows by a step")
      ->check(CLI::Range(1, 4096));
  app.add_option("--steps", o.shape.steps, "growing steps per rep")->check(CLI::Range(1, 10000));
  app.add_option("--step-ms", o.shape.step_ms, "time from one step's start to the next (the GPU's)")
      ->check(CLI::Range(0.0, 10000.0));
  app.add_option("--reps", o.reps, "reps of each setting, alternating")->check(CLI::Range(1, 100));
  app.add_option("--burst-pages", o.burst_pages, "KVCACHED_MAP_AHEAD_BURST_PAGES of the 'on' runs")
      ->check(CLI::Range(1, 65536));
  app.add_option("--json-out", o.json_out, "also write the JSON line to this file");
  CLI11_PARSE(app, argc, argv);

  const kvcached::Config env = kb::EnvConfig();
  const double gib = o.region_gib > 0 ? o.region_gib : (kb::CustomDriver(env) ? 1.0 / 32 : 1.0);
  const std::uint64_t page = env.page_size();
  const auto region_bytes =
      (static_cast<std::uint64_t>(gib * static_cast<double>(1ULL << 30)) + page - 1) / page * page;
  if (const std::string why = kb::GrowthFits(o.shape, page, region_bytes); !why.empty()) {
    std::fprintf(stderr, "error: %s\n", why.c_str());
    return 2;
  }
  std::printf(
      "step growth: %d regions of %llu MiB, %d pages of %llu MiB each a step, %d steps %.0f ms "
      "apart, %d reps per setting, %s\n",
      o.regions, static_cast<unsigned long long>(region_bytes >> 20), o.shape.pages_per_step,
      static_cast<unsigned long long>(page >> 20), o.shape.steps, o.shape.step_ms, o.reps,
      kb::DriverLabel(env).c_str());

  // One runtime per setting (the burst cap is read once), created up front; reps alternate.
  struct Setting {
    std::string name;
    std::unique_ptr<Runtime> rt;
    std::vector<std::uint64_t> bases;
    std::vector<kb::GrowthRep> reps;
  };
  std::vector<Setting> settings;
  for (const std::size_t burst : {std::size_t{0}, o.burst_pages}) {
    kvcached::Config c = env;
    c.map_ahead_burst_pages = burst;
    Setting s{burst == 0 ? "burst off" : "burst " + std::to_string(burst), nullptr, {}, {}};
    s.rt = kb::Take(Runtime::Create(c), "Runtime::Create");
    for (int r = 0; r < o.regions; ++r) {
      s.bases.push_back(
          kb::Take(s.rt->CreateRegion(o.shape.device, region_bytes, kvcached::RegionKind::kLazy),
                   "CreateRegion"));
    }
    settings.push_back(std::move(s));
  }
  const kb::DriverCalls calls(env);          // counts only on the fake driver
  for (int rep = -1; rep < o.reps; ++rep) {  // rep -1: untimed warm-up of each
    for (Setting& s : settings) {
      kb::GrowthRep r = kb::GrowSteps(*s.rt, s.bases, o.shape, page, &calls);
      kb::ResetToIdle(*s.rt, s.bases, o.shape, page);
      if (rep >= 0) {
        s.reps.push_back(std::move(r));
      }
    }
  }

  std::printf("  %-10s %14s %14s %14s %12s %12s\n", "setting", "acquire_ms", "min-max",
              "step_p90_ms", "sync_maps", "pool_maps");
  nlohmann::json results = nlohmann::json::array();
  std::vector<double> medians;
  for (const Setting& s : settings) {
    std::vector<double> totals;
    std::vector<double> steps;
    std::vector<double> syncs;
    std::vector<double> pools;
    for (const kb::GrowthRep& r : s.reps) {
      totals.push_back(r.acquire_ms_total);
      steps.insert(steps.end(), r.acquire_ms_step.begin(), r.acquire_ms_step.end());
      syncs.push_back(static_cast<double>(r.sync_maps));
      pools.push_back(static_cast<double>(r.pool_maps));
    }
    const double med = kb::Median(totals);
    medians.push_back(med);
    std::printf("  %-10s %14.1f %6.1f-%-7.1f %14.2f %12.0f %12.0f\n", s.name.c_str(), med,
                kb::Percentile(totals, 0), kb::Percentile(totals, 100), kb::Percentile(steps, 90),
                kb::Median(syncs), kb::Median(pools));
    nlohmann::json per_page = nlohmann::json::object();
    if (calls.available()) {
      // Driver calls a page the engine acquired (the pool's map-ahead included), median of reps.
      const double pages = static_cast<double>(o.regions) * o.shape.pages_per_step * o.shape.steps;
      std::printf("    driver calls a page:");
      for (std::size_t i = 0; i < kb::DriverCalls::kNames.size(); ++i) {
        std::vector<double> v;
        for (const kb::GrowthRep& r : s.reps) v.push_back(static_cast<double>(r.driver_calls[i]));
        per_page[kb::DriverCalls::kNames[i]] = kb::Median(v) / pages;
        std::printf(" %s %.2f", kb::DriverCalls::kNames[i], kb::Median(v) / pages);
      }
      std::printf("\n");
    }
    results.push_back({{"setting", s.name},
                       {"driver_calls_per_page", per_page},
                       {"acquire_ms_total_median", med},
                       {"acquire_ms_totals", totals},
                       {"step_ms_p50", kb::Median(steps)},
                       {"step_ms_p90", kb::Percentile(steps, 90)},
                       {"sync_maps_median", kb::Median(syncs)},
                       {"pool_maps_median", kb::Median(pools)}});
  }
  const double ratio = medians[0] > 0 ? medians[1] / medians[0] : 0;
  std::printf("  engine time in acquires, burst on / off: %.3f\n", ratio);
  nlohmann::json info = nlohmann::json::array();
  info.push_back(kb::MakeInfo("acquire_ms_on_over_off", ratio, "ratio"));
  kb::EmitJson({{"bench", "step_growth"},
                {"driver", kb::DriverLabel(env)},
                {"regions", o.regions},
                {"region_bytes", region_bytes},
                {"pages_per_step", o.shape.pages_per_step},
                {"steps", o.shape.steps},
                {"step_ms", o.shape.step_ms},
                {"reps", o.reps},
                {"results", results},
                {"info", info}},
               o.json_out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return kb::Main(argc, argv, Run);
}
