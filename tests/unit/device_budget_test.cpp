// The budget checks that need the GPU's size (issue 12, defect 5): a utilization that rounds to
// nothing is refused at start, a budget above the GPU is clamped with one warning naming both,
// and the engine (DeviceState, on the fake driver) runs the same function as `kvctl doctor`.
#include "core/config/device_budget.h"

#include <gtest/gtest.h>

#include <string>

#include "core/runtime/runtime.h"
#include "tests/unit/runtime_test_fixture.h"

namespace kvcached {
namespace {

constexpr std::uint64_t kMiB = 1ULL << 20;
constexpr std::uint64_t kGiB = 1ULL << 30;

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(DeviceBudget, UtilizationTimesTheGpuByDefault) {
  Config c;
  c.gpu_utilization = 0.5;
  auto b = BudgetForDevice(c, 80 * kGiB, 0);
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ(b.value().bytes, 40 * kGiB);
  EXPECT_TRUE(b.value().warning.empty());
}

TEST(DeviceBudget, UtilizationThatRoundsBelowTheMinimumIsRefusedNamingIt) {
  Config c;
  c.gpu_utilization = 1e-12;  // 0 bytes of 80 GiB
  auto b = BudgetForDevice(c, 80 * kGiB, 3);
  ASSERT_FALSE(b.ok());
  const std::string m = b.status().message();
  EXPECT_TRUE(Has(m, "KVCACHED_GPU_UTILIZATION=1e-12 gives GPU 3 (80 GiB) a budget of 0 B")) << m;
  EXPECT_TRUE(Has(m, "below the minimum of 18 MiB")) << m;
  c.gpu_utilization = 0.0001;  // 8 MiB of 80 GiB
  EXPECT_FALSE(BudgetForDevice(c, 80 * kGiB, 0).ok());
  c.gpu_utilization = 0.001;  // 82 MiB
  EXPECT_TRUE(BudgetForDevice(c, 80 * kGiB, 0).ok());
}

TEST(DeviceBudget, BudgetAboveTheGpuIsTheWholeGpuWithAWarningNamingBoth) {
  Config c;
  c.budget_bytes = 100ULL << 40U;  // KVCACHED_BUDGET=100T
  auto b = BudgetForDevice(c, 80 * kGiB, 1);
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ(b.value().bytes, 80 * kGiB);
  const std::string w = b.value().warning;
  EXPECT_TRUE(Has(w, "KVCACHED_BUDGET=100 TiB is more than GPU 1's 80 GiB")) << w;
  EXPECT_TRUE(Has(w, "whole GPU")) << w;
  c.budget_bytes = 80 * kGiB;  // exactly the GPU: no warning
  EXPECT_TRUE(BudgetForDevice(c, 80 * kGiB, 1).value().warning.empty());
}

TEST(DeviceBudget, MinimumFollowsPagesAndPool) {
  Config c;
  EXPECT_EQ(MinimumBudgetBytes(c), 18 * kMiB);  // (5 + 4) x 2 MiB; the zero memory is outside
  c.page_prealloc = false;
  EXPECT_EQ(MinimumBudgetBytes(c), 8 * kMiB);
  c.page_size_mb = 64;
  EXPECT_EQ(MinimumBudgetBytes(c), 4 * 64 * kMiB);
  EXPECT_TRUE(BudgetTooSmall(c, 256 * kMiB).empty());
  EXPECT_FALSE(BudgetTooSmall(c, 256 * kMiB - 1).empty());
}

// The engine path: device 0 of the fake driver (8 GiB unless FAKECUDA_TOTAL_MB says otherwise).
TEST(DeviceBudget, EngineRefusesATinyUtilizationAtStartWithTheSameLine) {
  Config c = testing::QuietConfig();
  c.gpu_utilization = 1e-12;
  auto rt = Runtime::Create(c);
  ASSERT_TRUE(rt.ok()) << rt.status().message();
  auto region = rt.value()->CreateRegion(0, 2 * kMiB, RegionKind::kLazy);
  ASSERT_FALSE(region.ok());
  EXPECT_TRUE(Has(region.status().message(), "KVCACHED_GPU_UTILIZATION=1e-12 gives GPU 0"))
      << region.status().message();

  c.gpu_utilization = 0.95;
  c.budget_bytes = 100ULL << 40U;  // clamped with a warning, and works
  auto clamped = Runtime::Create(c);
  ASSERT_TRUE(clamped.ok());
  EXPECT_TRUE(clamped.value()->CreateRegion(0, 2 * kMiB, RegionKind::kLazy).ok());
}

}  // namespace
}  // namespace kvcached
