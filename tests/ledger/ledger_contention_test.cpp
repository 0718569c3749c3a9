// Contention: 16 processes acquire and release random page counts against a budget far smaller
// than what they want, for at least 20 s, while the test samples the segment continuously and,
// every 100 ms, freezes all of them to check the whole ledger at one instant.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/ledger/churn_harness.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger::testing {
namespace {

TEST(LedgerContention, SixteenProcessesNeverExceedBudgetOrLimits) {
  HarnessConfig config;
  config.segment = UniqueName("contention");
  config.workers = 16;
  config.budget_pages = 96;  // 16 workers x up to 16 pages want 256
  ChurnHarness harness(config);
  const std::string started = harness.Start();
  ASSERT_TRUE(started.empty()) << started;

  const auto start = std::chrono::steady_clock::now();
  auto next_freeze = start;
  std::vector<std::string> problems;
  while (std::chrono::steady_clock::now() - start < std::chrono::seconds(20)) {
    for (auto& p : harness.Sample()) problems.push_back(p);
    if (std::chrono::steady_clock::now() >= next_freeze) {
      for (auto& p : harness.FreezeAndCheck()) problems.push_back(p);
      next_freeze += std::chrono::milliseconds(100);
    }
    if (problems.size() > 20) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (auto& p : harness.Finish()) problems.push_back(p);
  const RunTotals t = harness.Totals();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "contention: %.1f s, 16 processes, %llu ledger calls (%llu admitted, %llu refused, "
      "%llu pressure signals), %llu lock-free samples, %llu frozen checks, highest frozen "
      "sum %llu of budget %llu bytes, slowest call %.3f ms, mean %.2f us\n",
      secs, static_cast<unsigned long long>(t.ops), static_cast<unsigned long long>(t.charges),
      static_cast<unsigned long long>(t.refusals),
      static_cast<unsigned long long>(t.pressure_signals),
      static_cast<unsigned long long>(t.samples), static_cast<unsigned long long>(t.freezes),
      static_cast<unsigned long long>(t.max_sum_charged),
      static_cast<unsigned long long>(config.budget_pages * config.page),
      static_cast<double>(t.max_latency_ns) / 1e6,
      t.ops ? static_cast<double>(t.total_latency_ns) / static_cast<double>(t.ops) / 1e3 : 0.0);
  ExpectNoOvercommit(t, problems);
  EXPECT_GT(t.charges, 10000U) << "too little traffic to mean anything";
  EXPECT_GT(t.refusals, 100U) << "the budget was never contended";
  EXPECT_GE(t.freezes, 150U);
  EXPECT_GT(t.max_sum_charged, config.budget_pages * config.page * 3 / 4)
      << "the budget was never nearly full";
  EXPECT_LT(t.max_latency_ns, 1'000'000'000U);
}

}  // namespace
}  // namespace kvcached::ledger::testing
