// Runs many ledger_worker processes in "churn" mode against one segment and checks the ledger's
// guarantees while they run: the contention and chaos tests are this harness with and without
// SIGKILLs.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/ledger/ledger_layout.h"
#include "core/ledger/ledger_segment.h"
#include "tests/ledger/worker_stats.h"

namespace kvcached::ledger::testing {

struct HarnessConfig {
  std::string segment;
  int workers = 16;
  std::uint64_t page = 2ULL << 20;
  std::uint64_t total_pages = 256;
  std::uint64_t budget_pages = 96;
  std::uint64_t max_pages = 16;  // what one worker tries to hold at most
  std::size_t max_rows = 4096;   // worker processes over the whole run (respawns included)
};

struct RunTotals {
  std::uint64_t freezes = 0;
  std::uint64_t samples = 0;
  std::uint64_t kills = 0;
  std::uint64_t spawns = 0;
  std::uint64_t ops = 0;
  std::uint64_t charges = 0;
  std::uint64_t refusals = 0;
  std::uint64_t pressure_signals = 0;
  std::uint64_t max_latency_ns = 0;
  std::uint64_t total_latency_ns = 0;
  std::uint64_t max_sum_charged = 0;  // highest sum of charged seen in a frozen snapshot
  std::uint64_t overcommits = 0;      // admissions that pushed the shadow account over budget
  std::uint64_t max_shadow = 0;       // highest shadow account (a lower bound of the true sum)
};

class ChurnHarness {
 public:
  explicit ChurnHarness(HarnessConfig config);
  ~ChurnHarness();
  ChurnHarness(const ChurnHarness&) = delete;
  ChurnHarness& operator=(const ChurnHarness&) = delete;

  // Creates the segment and the stats file and starts the workers. Empty string on success.
  std::string Start();
  // Lock-free look at the segment while workers run: per-slot bounds that hold at every instant.
  std::vector<std::string> Sample();
  // Stops every worker (SIGSTOP), checks the whole ledger against their own bookkeeping, resumes.
  std::vector<std::string> FreezeAndCheck();
  // SIGKILLs a random worker and starts a replacement.
  void KillOne(std::mt19937_64& rng);
  // Parks the workers, reclaims dead slots, compares the ledger with the live workers' holdings,
  // then lets them release and exit and checks that everything is zero.
  std::vector<std::string> Finish();

  [[nodiscard]] RunTotals Totals() const;
  [[nodiscard]] std::uint64_t LimitOf(int worker) const;

 private:
  pid_t Spawn(int worker);
  WorkerRow& Row(std::size_t i);
  StatsHeader& Header();

  HarnessConfig config_;
  std::unique_ptr<Segment> segment_;
  std::string stats_path_;
  void* stats_ = nullptr;
  std::size_t stats_bytes_ = 0;
  std::size_t rows_used_ = 0;
  struct Live {
    int worker;
    std::size_t row;
  };
  std::map<pid_t, Live> live_;
  RunTotals totals_;
};

// How every churn run ends: the shadow account (admissions witnessed by the workers themselves)
// printed, each problem the harness saw reported, and no admission above the budget.
inline void ExpectNoOvercommit(const RunTotals& t, const std::vector<std::string>& problems) {
  std::printf("shadow account: highest %llu bytes, %llu admissions over the budget\n",
              static_cast<unsigned long long>(t.max_shadow),
              static_cast<unsigned long long>(t.overcommits));
  for (const auto& p : problems) ADD_FAILURE() << p;
  EXPECT_EQ(t.overcommits, 0U) << "admissions witnessed the sum of charges above the budget";
}

}  // namespace kvcached::ledger::testing
