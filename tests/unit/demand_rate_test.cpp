// DemandRate: the map-ahead reserve that follows an engine's recent demand (pure arithmetic).
#include "core/region/demand_rate.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace kvcached {
namespace {

constexpr std::int64_t kMs = 1'000'000;

TEST(DemandRateTest, WithNoDemandTheTargetIsTheBase) {
  DemandRate d;
  EXPECT_EQ(d.Target(0, 2, 64), 2U);
  EXPECT_EQ(d.Target(10'000 * kMs, 0, 64), 0U);
}

TEST(DemandRateTest, SteadyStepsRaiseTheTargetToAboutAHundredMillisecondsOfDemand) {
  // 24 pages every 50 ms (vLLM's prefill steps on an H200 backed about that much per tensor): the
  // target settles near 100 ms of demand, i.e. about two steps' pages, so the pool maps the next
  // step's pages while the GPU runs this one.
  DemandRate d;
  std::int64_t t = 0;
  for (int step = 0; step < 40; ++step, t += 50 * kMs) d.Note(24, t);
  const std::size_t target = d.Target(t - 50 * kMs, 2, 1000);
  EXPECT_GE(target, 40U);
  EXPECT_LE(target, 60U);
  // The same pages a step every 20 ms: about five steps' worth (still ~100 ms of demand).
  DemandRate fast;
  t = 0;
  for (int step = 0; step < 100; ++step, t += 20 * kMs) fast.Note(24, t);
  EXPECT_GE(fast.Target(t - 20 * kMs, 2, 1000), 100U);
  EXPECT_LE(fast.Target(t - 20 * kMs, 2, 1000), 140U);
}

TEST(DemandRateTest, TheStepAfterALargeAcquireIsExpectedToNeedAsMuch) {
  // An idle engine's first prefill step backs 10 pages a tensor: the reserve covers a second step
  // like it at once (the rate alone would say 5), for up to tau after it.
  DemandRate d;
  d.Note(10, 1000 * kMs);
  EXPECT_EQ(d.Target(1010 * kMs, 2, 64), 10U);
  EXPECT_EQ(d.Target(1000 * kMs + DemandRate::kTauNs, 2, 64), 10U);
  EXPECT_LT(d.Target(1000 * kMs + DemandRate::kTauNs + kMs, 2, 64), 10U);
  d.Note(1, 1020 * kMs);  // a small step after it: the rate still remembers the large one
  EXPECT_GE(d.Target(1020 * kMs, 2, 64), 5U);
}

TEST(DemandRateTest, TheTargetFallsBackToTheBaseWithinASecondOfTheLastAcquire) {
  DemandRate d;
  std::int64_t t = 0;
  for (int step = 0; step < 40; ++step, t += 50 * kMs) d.Note(24, t);
  const std::int64_t last = t - 50 * kMs;
  EXPECT_GT(d.Target(last + 200 * kMs, 2, 1000), 2U);  // still covering a burst that may go on
  EXPECT_EQ(d.Target(last + 1000 * kMs, 2, 1000), 2U);
}

TEST(DemandRateTest, TheTargetNeverExceedsTheCapNorFallsBelowTheBase) {
  DemandRate d;
  for (int step = 0; step < 40; ++step) d.Note(1000, step * 10 * kMs);
  EXPECT_EQ(d.Target(400 * kMs, 2, 64), 64U);
  DemandRate small;
  small.Note(3, 0);  // 3 pages: fewer than the fixed reserve
  EXPECT_EQ(small.Target(0, 4, 64), 4U);
}

TEST(DemandRateTest, ACapAtOrBelowTheBaseTurnsItOff) {
  DemandRate d;
  for (int step = 0; step < 40; ++step) d.Note(1000, step * 10 * kMs);
  EXPECT_EQ(d.Target(400 * kMs, 2, 0), 2U);
  EXPECT_EQ(d.Target(400 * kMs, 8, 8), 8U);
}

TEST(DemandRateTest, ResetForgetsTheDemand) {
  DemandRate d;
  for (int step = 0; step < 40; ++step) d.Note(100, step * 10 * kMs);
  ASSERT_GT(d.Target(400 * kMs, 2, 1000), 2U);
  d.Reset();
  EXPECT_EQ(d.Target(400 * kMs, 2, 1000), 2U);
  d.Note(0, 500 * kMs);  // nothing became in use: no demand
  EXPECT_EQ(d.Target(500 * kMs, 2, 1000), 2U);
}

}  // namespace
}  // namespace kvcached
