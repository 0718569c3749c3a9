// PagePool behaviour through the runtime: the reserve of unmapped pages, budget refusals and
// their rollback, stealing mapped-ahead pages, pressure, and the background thread.
#include <dirent.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "core/pool/page_pool.h"
#include "tests/unit/runtime_test_fixture.h"

namespace kvcached {
namespace {

using namespace kvcached::testing;  // NOLINT(google-build-using-namespace)

class PoolTest : public LeakCheckedRuntimeTest {
 protected:
  void Start(const Config& c, std::uint64_t limit = 1ULL << 40) { t_ = MakeRuntime(c, limit); }
  // A budget of 4 pages: 2 pages mapped ahead in each of two lazy regions (a of `a_size` bytes,
  // b of 4 pages), waited for. Map-ahead begins at a region's first acquire: one each, refused
  // while the budget is 0 (so nothing is backed and no driver call made), then the budget
  // grows. refusals_at_start_ counts them. (The zero page is outside the budget.)
  void StartWithTwoRegionsMappedAhead(std::uint64_t a_size, std::uint64_t& a, std::uint64_t& b) {
    Config c = QuietConfig();
    c.map_ahead_pages = 2;
    Start(c, 0);
    a = Lazy(a_size);
    b = Lazy(4 * kPage);
    ASSERT_EQ(AcquireOne(rt(), a, kPage).code(), Errc::kNoMemory);
    ASSERT_EQ(AcquireOne(rt(), b, kPage).code(), Errc::kNoMemory);
    refusals_at_start_ = StatsOf(rt()).budget_refusals;
    budget().SetLimit(4 * kPage);
    ASSERT_TRUE(WaitFor([&] {
      return rt().Info(a).value().mapped_free_pages == 2 &&
             rt().Info(b).value().mapped_free_pages == 2;
    }));
  }
  TestBudget& budget() { return *t_.budget; }
  std::uint64_t refusals_at_start_ = 0;
};

std::vector<std::string> ThreadNames() {
  std::vector<std::string> names;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return names;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string name;
    std::getline(comm, name);
    names.push_back(name);
  }
  closedir(dir);
  return names;
}

int CountNamed(const std::string& name) {
  int n = 0;
  for (const auto& t : ThreadNames()) n += t == name ? 1 : 0;
  return n;
}

TEST_F(PoolTest, PreallocationKeepsTheMinimumReserveAndCapsItAtTheMaximum) {
  Config c = QuietConfig();
  c.page_prealloc = true;
  c.min_reserved_pages = 3;
  c.max_reserved_pages = 5;
  c.trim_delay_ms = 0;
  Start(c);
  EXPECT_EQ(StatsOf(rt()).pool_bytes, 0U);  // nothing before the first lazy region
  std::uint64_t base = Lazy(16 * kPage);
  ASSERT_TRUE(WaitFor([&] { return StatsOf(rt()).pool_bytes == 3 * kPage; }));

  {
    // No page can be created: the acquire can only succeed from the reserve. (Counting creates
    // instead would race with the worker refilling the reserve at the same moment.)
    ScopedFaults f("cuMemCreate:1+");
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(AcquireOne(rt(), base, 3 * kPage).ok());
  }
  ASSERT_TRUE(AcquireOne(rt(), base + 3 * kPage, kPage).ok());                  // a new page
  ASSERT_TRUE(WaitFor([&] { return StatsOf(rt()).pool_bytes == 3 * kPage; }));  // refilled

  // Released pages are trimmed (delay 0) into the reserve, which never exceeds the maximum.
  ASSERT_TRUE(ReleaseOne(rt(), base, 4 * kPage).ok());
  // (The trimmed handles reach the reserve, and the ones over its maximum the budget, just after
  // the pages turn ZERO: wait for the whole settled state.)
  ASSERT_TRUE(WaitFor([&] {
    return StatsOf(rt()).mapped_free_bytes == 0 && StatsOf(rt()).pool_bytes == 5 * kPage &&
           budget().charged() == 5 * kPage;
  })) << "mapped free "
      << StatsOf(rt()).mapped_free_bytes / kPage << " pages, reserve "
      << StatsOf(rt()).pool_bytes / kPage << " pages, charged " << budget().charged() / kPage;
  EXPECT_EQ(budget().charged(), 5 * kPage);  // the reserve (the zero page is outside)
}

TEST_F(PoolTest, BudgetRefusalIsRecoverableAndRollsBackTheWholeAcquire) {
  Config c = QuietConfig();
  c.max_reserved_pages = 8;
  Start(c, 3 * kPage);  // 3 pages (the zero page is outside the budget)
  std::uint64_t base = Lazy(8 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base, 2 * kPage).ok());
  std::uint64_t charged = budget().charged();

  // Pages 2..3 need two new pages; only one fits: neither may stay backed.
  Status st = AcquireOne(rt(), base + 2 * kPage, 2 * kPage);
  ASSERT_EQ(st.code(), Errc::kNoMemory);
  EXPECT_NE(st.message().find("budget refused 4 MiB on GPU 0"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("holds 4 MiB of limit 6 MiB"), std::string::npos) << st.message();
  EXPECT_EQ(StateOf(rt(), base + 2 * kPage), PageState::kZero);
  EXPECT_EQ(StateOf(rt(), base + 3 * kPage), PageState::kZero);
  EXPECT_EQ(StatsOf(rt()).budget_refusals, 1U);
  EXPECT_GT(budget().pressure_requests_.load(), 0U);  // others were asked to give back
  // The budget was asked once for both pages: the refusal created no page.
  EXPECT_EQ(StatsOf(rt()).pool_bytes, 0U);
  EXPECT_EQ(budget().charged(), charged);

  // One page still fits, and a release makes room for more.
  ASSERT_TRUE(AcquireOne(rt(), base + 2 * kPage, kPage).ok());
  ASSERT_TRUE(ReleaseOne(rt(), base, kPage).ok());
  EXPECT_EQ(AcquireOne(rt(), base + 3 * kPage, kPage).code(), Errc::kOk);  // steals page 0
  EXPECT_EQ(StateOf(rt(), base), PageState::kZero);
}

TEST_F(PoolTest, AMissStealsPagesMappedAheadInOtherRegionsBeforeFailing) {
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  ASSERT_NO_FATAL_FAILURE(StartWithTwoRegionsMappedAhead(4 * kPage, a, b));
  ASSERT_TRUE(AcquireOne(rt(), a, 3 * kPage).ok());  // 2 warm + 1 stolen from b
  EXPECT_EQ(StatsOf(rt()).sync_maps, 1U);
  EXPECT_EQ(StatsOf(rt()).budget_refusals, refusals_at_start_);
  EXPECT_EQ(rt().Info(b).value().mapped_free_pages, 1U);
  EXPECT_EQ(StateOf(rt(), b + kPage), PageState::kZero);  // highest page stolen first
  EXPECT_EQ(StateOf(rt(), b), PageState::kMappedFree);
}

TEST_F(PoolTest, ARefusalThatStealingCannotSatisfyMakesNoDriverCall) {
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  ASSERT_NO_FATAL_FAILURE(StartWithTwoRegionsMappedAhead(8 * kPage, a, b));
  // 6 pages wanted, 2 warm in a, 2 could be stolen from b: stealing cannot complete it, so the
  // refusal must not swap b's pages out (an engine repeats such a refusal every step).
  const std::uint64_t unmaps = CallCount("cuMemUnmap");
  const std::uint64_t maps = CallCount("cuMemMap");
  EXPECT_EQ(AcquireOne(rt(), a, 6 * kPage).code(), Errc::kNoMemory);
  EXPECT_EQ(CallCount("cuMemUnmap") - unmaps, 0U);
  EXPECT_EQ(CallCount("cuMemMap") - maps, 0U);
  EXPECT_EQ(rt().Info(b).value().mapped_free_pages, 2U);
  EXPECT_EQ(rt().Info(a).value().in_use_pages, 0U);
}

TEST_F(PoolTest, ARefusedRequestOverSeveralRegionsMakesNoDriverCall) {
  // An engine's step asks for one page in each of several layers' regions at once. When the
  // budget cannot back them all, nothing may be swapped in (and undone): an engine repeats the
  // refused request every step while it waits.
  Config c = QuietConfig();
  Start(c, 3 * kPage);  // 3 pages (the zero page is outside the budget)
  std::vector<std::uint64_t> layers;
  for (int i = 0; i < 4; ++i) layers.push_back(Lazy(2 * kPage));
  std::vector<ByteRange> step;
  for (std::uint64_t base : layers) step.push_back({base, kPage});
  const std::uint64_t creates = CallCount("cuMemCreate");
  const std::uint64_t maps = CallCount("cuMemMap");
  const std::uint64_t unmaps = CallCount("cuMemUnmap");
  Status st = rt().Acquire(step);
  ASSERT_EQ(st.code(), Errc::kNoMemory);
  EXPECT_NE(st.message().find("budget refused 8 MiB on GPU 0"), std::string::npos) << st.message();
  EXPECT_EQ(CallCount("cuMemCreate") - creates, 0U);
  EXPECT_EQ(CallCount("cuMemMap") - maps, 0U);
  EXPECT_EQ(CallCount("cuMemUnmap") - unmaps, 0U);
  EXPECT_EQ(StatsOf(rt()).budget_refusals, 1U);
  EXPECT_GT(budget().pressure_requests_.load(), 0U);
  for (std::uint64_t base : layers) EXPECT_EQ(StateOf(rt(), base), PageState::kZero);

  // Three of them fit; overlapping ranges count each page once.
  step.pop_back();
  step.push_back({layers[0], 512});
  ASSERT_TRUE(rt().Acquire(step).ok());
  EXPECT_EQ(StateOf(rt(), layers[2]), PageState::kInUse);
}

TEST_F(PoolTest, AFullBudgetDoesNotStopAnEngineFromCreatingItsRegions) {
  // Another engine holds the whole budget when this one starts: its first region is made at
  // once (the zero page is process overhead, counted outside the budget), and it then waits for
  // KV memory like any engine whose budget is full.
  Config c = QuietConfig();
  Start(c, 0);
  const auto t0 = std::chrono::steady_clock::now();
  std::uint64_t base = Lazy(4 * kPage);
  const auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_NE(base, 0U);
  EXPECT_LT(waited, std::chrono::seconds(1));
  EXPECT_EQ(budget().pressure_requests_.load(), 0U);  // nobody was asked to give anything
  EXPECT_EQ(budget().charged(), 0U);
  EXPECT_EQ(budget().View().others, kPage);
  EXPECT_EQ(AcquireOne(rt(), base, kPage).code(), Errc::kNoMemory);
  budget().SetLimit(kPage);  // memory comes back
  ASSERT_TRUE(AcquireOne(rt(), base, kPage).ok());
  EXPECT_EQ(budget().charged(), kPage);
  ASSERT_TRUE(ReleaseOne(rt(), base, kPage).ok());
  ASSERT_TRUE(rt().DestroyRegion(base).ok());
}

TEST_F(PoolTest, PressureGivesBackEverythingReservedWithinAFewPeriods) {
  Config c = QuietConfig();
  c.map_ahead_pages = 2;
  c.page_prealloc = true;
  c.min_reserved_pages = 2;
  c.max_reserved_pages = 4;
  Start(c);
  std::uint64_t base = Lazy(8 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base + 6 * kPage, kPage).ok());
  ASSERT_TRUE(WaitFor([&] {
    DeviceStats s = StatsOf(rt());
    return s.pool_bytes == 2 * kPage && s.mapped_free_bytes == 2 * kPage;
  }));
  // A pass may be under way when the signal is raised; the next whole pass takes it and gives
  // everything back before its heartbeat. So two heartbeats after raising it is all back:
  // counted in passes, not in wall time, which a loaded machine (sanitizers, 2 cores) stretches.
  const std::uint64_t beats_at_raise = budget().heartbeats_.load();
  budget().RaisePressure();
  ASSERT_TRUE(WaitFor([&] { return budget().heartbeats_.load() >= beats_at_raise + 2; }));
  DeviceStats after = StatsOf(rt());
  EXPECT_EQ(after.pool_bytes, 0U);
  EXPECT_EQ(after.mapped_free_bytes, 0U);
  EXPECT_EQ(budget().charged(), kPage);  // the page in use (the zero page is outside)
  EXPECT_EQ(StateOf(rt(), base + 6 * kPage), PageState::kInUse);
  // The hold keeps map-ahead off for a while...
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(StatsOf(rt()).mapped_free_bytes, 0U);
  // ...until the engine needs memory again.
  ASSERT_TRUE(AcquireOne(rt(), base + 7 * kPage, 1).ok());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(rt()).mapped_free_bytes == 2 * kPage; }));
}

TEST_F(PoolTest, OneNamedWorkerThreadStartsWithTheFirstLazyRegion) {
  int before = CountNamed("kvcached-pool");
  Start(QuietConfig());
  EXPECT_EQ(CountNamed("kvcached-pool"), before);
  auto eager = rt().CreateRegion(0, kPage, RegionKind::kEager);
  ASSERT_TRUE(eager.ok());
  EXPECT_EQ(CountNamed("kvcached-pool"), before);
  Lazy(kPage);
  Lazy(kPage);
  ASSERT_TRUE(WaitFor([&] { return CountNamed("kvcached-pool") == before + 1; }));
  ASSERT_TRUE(WaitFor([&] { return budget().heartbeats_.load() > 2; }));
  // It sleeps between passes: about one pass per 20 ms period, not a busy loop.
  std::uint64_t beats = budget().heartbeats_.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::uint64_t passes = budget().heartbeats_.load() - beats;
  EXPECT_GE(passes, 3U);
  EXPECT_LE(passes, 20U);
  t_.rt.reset();
  EXPECT_EQ(CountNamed("kvcached-pool"), before);
}

TEST_F(PoolTest, StatsCountPeakPhysicalMemory) {
  Start(QuietConfig());
  std::uint64_t base = Lazy(8 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base, 5 * kPage).ok());
  ASSERT_TRUE(ReleaseOne(rt(), base, 5 * kPage).ok());
  ASSERT_TRUE(rt().Trim(0).ok());
  DeviceStats s = StatsOf(rt());
  EXPECT_EQ(s.peak_physical_bytes, 6 * kPage);  // zero page + 5
  EXPECT_EQ(s.maps, 5U);
  EXPECT_EQ(s.unmaps, 5U);
  EXPECT_EQ(s.sync_maps, 5U);
  EXPECT_EQ(s.budget_limit_bytes, 1ULL << 40);
  EXPECT_EQ(s.page_size, kPage);
  EXPECT_EQ(s.regions, 1U);
  EXPECT_EQ(s.reserved_va_bytes, 8 * kPage);
}

}  // namespace
}  // namespace kvcached
