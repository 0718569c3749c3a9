// Chaos: the contention run with SIGKILLs at random moments (at least 1000), killed workers
// restarted at once. No survivor's ledger call may take more than 1 s, the budget holds at every
// frozen instant, and after reclamation the ledger accounts exactly what the live workers hold.
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "tests/ledger/churn_harness.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger::testing {
namespace {

TEST(LedgerChaos, ThousandSigkillsNeitherBlockNorLeak) {
  HarnessConfig config;
  config.segment = UniqueName("chaos");
  config.workers = 16;
  config.budget_pages = 96;
  ChurnHarness harness(config);
  const std::string started = harness.Start();
  ASSERT_TRUE(started.empty()) << started;

  std::mt19937_64 rng(std::random_device{}());
  const auto start = std::chrono::steady_clock::now();
  auto next_freeze = start;
  auto next_kill = start;
  std::vector<std::string> problems;
  constexpr std::uint64_t kKills = 1100;
  // At least 20 s and 1100 kills (bounded at 80 s on a very slow machine).
  while ((harness.Totals().kills < kKills ||
          std::chrono::steady_clock::now() - start < std::chrono::seconds(20)) &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(80)) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_kill) {
      harness.KillOne(rng);
      next_kill = now + std::chrono::microseconds(rng() % 30000);
    }
    if (now >= next_freeze) {
      for (auto& p : harness.FreezeAndCheck()) problems.push_back(p);
      next_freeze = now + std::chrono::milliseconds(100);
    }
    for (auto& p : harness.Sample()) problems.push_back(p);
    if (problems.size() > 20) break;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  const double run_secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (auto& p : harness.Finish()) problems.push_back(p);
  const RunTotals t = harness.Totals();
  std::printf(
      "chaos: %.1f s, %llu SIGKILLs, %llu processes started, %llu ledger calls (%llu "
      "admitted, %llu refused), %llu frozen checks, highest frozen sum %llu of budget %llu "
      "bytes, slowest call of any process %.3f ms, mean %.2f us\n",
      run_secs, static_cast<unsigned long long>(t.kills), static_cast<unsigned long long>(t.spawns),
      static_cast<unsigned long long>(t.ops), static_cast<unsigned long long>(t.charges),
      static_cast<unsigned long long>(t.refusals), static_cast<unsigned long long>(t.freezes),
      static_cast<unsigned long long>(t.max_sum_charged),
      static_cast<unsigned long long>(config.budget_pages * config.page),
      static_cast<double>(t.max_latency_ns) / 1e6,
      t.ops ? static_cast<double>(t.total_latency_ns) / static_cast<double>(t.ops) / 1e3 : 0.0);
  ExpectNoOvercommit(t, problems);
  EXPECT_GE(t.kills, 1000U);
  EXPECT_LT(t.max_latency_ns, 1'000'000'000U) << "a survivor blocked for more than 1 s";
  EXPECT_GT(t.charges, 5000U);
}

}  // namespace
}  // namespace kvcached::ledger::testing
