// Page states of lazy regions (PageTable bookkeeping and the real thing on the fake driver),
// and eager regions.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "core/pool/page_pool.h"
#include "core/region/page_table.h"
#include "tests/unit/runtime_test_fixture.h"

namespace kvcached {
namespace {

using namespace kvcached::testing;  // NOLINT(google-build-using-namespace)

// ---------- PageTable (pure bookkeeping) ----------

TEST(PageTableTest, StartsAllZero) {
  PageTable t(130);  // spans three bitmap words, the last one partial
  EXPECT_EQ(t.zero_count(), 130U);
  EXPECT_EQ(t.mapped_free_count(), 0U);
  std::vector<std::size_t> lowest;
  t.LowestZero(200, lowest);
  ASSERT_EQ(lowest.size(), 130U);  // no phantom pages past the end
  EXPECT_EQ(lowest.front(), 0U);
  EXPECT_EQ(lowest.back(), 129U);
}

TEST(PageTableTest, FullCycleAndCounts) {
  PageTable t(4);
  t.MarkMappedFree(1, 100);
  EXPECT_EQ(t.at(1).state, PageState::kMappedFree);
  EXPECT_EQ(t.zero_count(), 3U);
  EXPECT_EQ(t.mapped_free_count(), 1U);
  EXPECT_EQ(t.CommitAcquire(1, 2), 1U);
  EXPECT_EQ(t.at(1).state, PageState::kInUse);
  EXPECT_EQ(t.in_use_count(), 1U);
  EXPECT_EQ(t.mapped_free_count(), 0U);
  EXPECT_EQ(t.CommitAcquire(1, 2), 0U);  // second reference: no state change
  EXPECT_EQ(t.at(1).refs, 2U);
  EXPECT_EQ(t.CommitRelease(1, 2, 200), 0U);
  EXPECT_EQ(t.at(1).state, PageState::kInUse);
  EXPECT_EQ(t.CommitRelease(1, 2, 300), 1U);
  EXPECT_EQ(t.at(1).state, PageState::kMappedFree);
  EXPECT_EQ(t.at(1).free_since_ns, 300);
  t.MarkZero(1);
  EXPECT_EQ(t.at(1).state, PageState::kZero);
  EXPECT_EQ(t.zero_count(), 4U);
  EXPECT_EQ(t.FirstUnacquired(0, 4), 0U);
}

TEST(PageTableTest, ClassifyAndSelections) {
  PageTable t(8);
  for (std::size_t i : {1, 2, 3, 5, 6}) t.MarkMappedFree(i, 0);
  t.MarkMappedFree(7, 1000);  // freed recently
  t.SetBusy(0, true);
  EXPECT_TRUE(t.Classify(0, 2).any_busy);
  EXPECT_FALSE(t.Classify(1, 4).any_zero);
  EXPECT_TRUE(t.Classify(3, 5).any_zero);

  std::vector<std::size_t> zero;
  t.LowestZero(5, zero);  // 0 is busy
  EXPECT_EQ(zero, (std::vector<std::size_t>{4}));

  std::vector<std::size_t> trim;
  t.TrimCandidates(/*now=*/1000, /*delay=*/500, /*keep=*/2, trim);
  EXPECT_EQ(trim, (std::vector<std::size_t>{3, 5, 6}));  // 1, 2 kept; 7 too recent

  t.Pin(6, 7);
  std::vector<std::size_t> reclaim;
  t.Reclaimable(3, reclaim);  // highest first, pinned 6 skipped
  EXPECT_EQ(reclaim, (std::vector<std::size_t>{7, 5, 3}));
  t.Unpin(6, 7);
  EXPECT_EQ(t.busy_count(), 1U);
}

// ---------- Lazy regions on the fake driver ----------

class LazyRegionTest : public LeakCheckedRuntimeTest {
 protected:
  // A lazy region of `size` bytes, in a runtime made with `config` if there is none yet.
  std::uint64_t Create(std::uint64_t size, const Config& config = QuietConfig()) {
    if (!t_.rt) t_ = MakeRuntime(config);
    return Lazy(size);
  }
};

TEST_F(LazyRegionTest, CreationRoundsUpAndAliasesEveryPageToTheZeroPage) {
  std::uint64_t calls_before = CallCount("cuMemSetAccess");
  std::uint64_t base = Create(5 * kMiB);
  auto info = rt().Info(base);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info.value().size, 6 * kMiB);
  EXPECT_EQ(info.value().pages, 3U);
  EXPECT_EQ(info.value().zero_pages, 3U);
  EXPECT_EQ(info.value().kind, RegionKind::kLazy);
  for (int p = 0; p < 3; ++p) EXPECT_EQ(StateOf(rt(), base + p * kPage), PageState::kZero);
  // Zero page: map + set-access once to clear it; the region: one set-access for all pages.
  EXPECT_EQ(CallCount("cuMemSetAccess") - calls_before, 2U);
  // Only the zero page is physical, counted outside the budget (as pass-through bytes).
  EXPECT_EQ(t_.budget->charged(), 0U);
  EXPECT_EQ(t_.budget->View().others, kPage);
  EXPECT_EQ(Counts().handles - before_.handles, 1U);
  EXPECT_EQ(StatsOf(rt()).zero_page_bytes, kPage);
}

TEST_F(LazyRegionTest, AcquireMissSwapsInAndReleaseKeepsThePageMapped) {
  std::uint64_t base = Create(4 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base + kPage, 4096).ok());
  EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kInUse);
  EXPECT_EQ(StateOf(rt(), base), PageState::kZero);
  DeviceStats s = StatsOf(rt());
  EXPECT_EQ(s.sync_maps, 1U);
  EXPECT_EQ(s.maps, 1U);
  EXPECT_EQ(s.in_use_bytes, kPage);
  EXPECT_EQ(t_.budget->View().in_use, kPage);

  ASSERT_TRUE(ReleaseOne(rt(), base + kPage, 4096).ok());
  EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kMappedFree);
  s = StatsOf(rt());
  EXPECT_EQ(s.mapped_free_bytes, kPage);
  EXPECT_EQ(s.in_use_bytes, 0U);
  EXPECT_EQ(t_.budget->View().in_use, 0U);
  EXPECT_EQ(t_.budget->View().reserved, kPage);  // the mapped page

  // Acquiring it again is warm: no new swap.
  ASSERT_TRUE(AcquireOne(rt(), base + kPage, 4096).ok());
  EXPECT_EQ(StatsOf(rt()).maps, 1U);
  EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kInUse);
}

TEST_F(LazyRegionTest, SubPageRangesShareAPageByReferenceCount) {
  std::uint64_t base = Create(2 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base, 4096).ok());
  ASSERT_TRUE(AcquireOne(rt(), base + 8192, 4096).ok());
  EXPECT_EQ(StatsOf(rt()).maps, 1U);
  ASSERT_TRUE(ReleaseOne(rt(), base, 4096).ok());
  EXPECT_EQ(StateOf(rt(), base), PageState::kInUse);  // the other block still holds it
  ASSERT_TRUE(ReleaseOne(rt(), base + 8192, 4096).ok());
  EXPECT_EQ(StateOf(rt(), base), PageState::kMappedFree);
  Status extra = ReleaseOne(rt(), base, 4096);
  EXPECT_EQ(extra.code(), Errc::kState);
  EXPECT_EQ(StateOf(rt(), base), PageState::kMappedFree);
}

TEST_F(LazyRegionTest, ARangeAcrossABoundaryTouchesBothPages) {
  std::uint64_t base = Create(3 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base + kPage - 16, 32).ok());
  EXPECT_EQ(StateOf(rt(), base), PageState::kInUse);
  EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kInUse);
  EXPECT_EQ(StateOf(rt(), base + 2 * kPage), PageState::kZero);
  // Releasing a range that touches an unacquired page changes nothing.
  EXPECT_EQ(ReleaseOne(rt(), base + kPage, kPage + 1).code(), Errc::kState);
  EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kInUse);
  ASSERT_TRUE(ReleaseOne(rt(), base + kPage - 16, 32).ok());
  EXPECT_EQ(StateOf(rt(), base), PageState::kMappedFree);
  EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kMappedFree);
}

TEST_F(LazyRegionTest, BadRangesAreRejected) {
  std::uint64_t base = Create(2 * kPage);
  EXPECT_EQ(AcquireOne(rt(), base + kPage, kPage + 1).code(), Errc::kInvalid);
  EXPECT_EQ(AcquireOne(rt(), base, 0).code(), Errc::kInvalid);
  EXPECT_EQ(AcquireOne(rt(), base + 2 * kPage, 1).code(), Errc::kNotFound);
  EXPECT_EQ(StatsOf(rt()).maps, 0U);
}

TEST_F(LazyRegionTest, MapAheadWaitsForTheFirstAcquireThenBacksTheLowestZeroPages) {
  Config c = QuietConfig();
  c.map_ahead_pages = 2;
  // Budget: the acquired page and exactly the two mapped-ahead pages, so the worker cannot
  // refill and any driver call during the warm acquire below would be the foreground's.
  t_ = MakeRuntime(c, 3 * kPage);
  std::uint64_t base = Create(6 * kPage, c);
  // A fresh region may still be written all over by the engine (its zero fill): the worker maps
  // nothing into it, however many passes it makes, until the engine's first acquire.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(StateOf(rt(), base), PageState::kZero);
  EXPECT_EQ(StatsOf(rt()).maps, 0U);

  ASSERT_TRUE(AcquireOne(rt(), base + 5 * kPage, 4096).ok());
  EXPECT_EQ(StatsOf(rt()).sync_maps, 1U);
  ASSERT_TRUE(WaitFor([&] { return StateOf(rt(), base + kPage) == PageState::kMappedFree; }));
  EXPECT_EQ(StateOf(rt(), base), PageState::kMappedFree);
  EXPECT_EQ(StateOf(rt(), base + 2 * kPage), PageState::kZero);

  std::uint64_t calls = VmmCalls();
  ASSERT_TRUE(AcquireOne(rt(), base, 4096).ok());
  EXPECT_EQ(VmmCalls(), calls);
  EXPECT_EQ(StateOf(rt(), base), PageState::kInUse);
  EXPECT_EQ(StatsOf(rt()).sync_maps, 1U);

  // Room for one more page: the worker maps the next lowest ZERO page ahead.
  t_.budget->SetLimit(5 * kPage);
  ASSERT_TRUE(WaitFor([&] { return StateOf(rt(), base + 2 * kPage) == PageState::kMappedFree; }));
  EXPECT_EQ(StateOf(rt(), base + 3 * kPage), PageState::kZero);
  // (The worker counts its maps just after it marks the pages.)
  ASSERT_TRUE(WaitFor([&] { return StatsOf(rt()).maps >= 4U; }));
  EXPECT_EQ(StatsOf(rt()).maps, 4U);
}

TEST_F(LazyRegionTest, TheFirstSwapInOfARegionWaitsForTheWorkQueuedBeforeIt) {
  // Work queued before the first acquire (the engine zero-filling the allocation) writes through
  // the aliases the swap replaces; later swaps need no wait (nothing writes unheld pages then).
  std::uint64_t a = Create(4 * kPage);
  std::uint64_t b = Create(4 * kPage);
  std::uint64_t syncs = CallCount("cuCtxSynchronize");
  ASSERT_TRUE(AcquireOne(rt(), a, kPage).ok());
  EXPECT_EQ(CallCount("cuCtxSynchronize") - syncs, 1U);
  ASSERT_TRUE(AcquireOne(rt(), a + 2 * kPage, kPage).ok());
  EXPECT_EQ(CallCount("cuCtxSynchronize") - syncs, 1U);
  ASSERT_TRUE(AcquireOne(rt(), b + kPage, kPage).ok());
  EXPECT_EQ(CallCount("cuCtxSynchronize") - syncs, 2U);
}

TEST_F(LazyRegionTest, DeferredTrimReturnsOldFreePagesToZero) {
  Config c = QuietConfig();
  c.trim_delay_ms = 100;
  std::uint64_t base = Create(4 * kPage, c);
  ASSERT_TRUE(AcquireOne(rt(), base, 2 * kPage).ok());
  auto released_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(ReleaseOne(rt(), base, 2 * kPage).ok());
  PageState just_released = StateOf(rt(), base);
  if (std::chrono::steady_clock::now() - released_at < std::chrono::milliseconds(100)) {
    EXPECT_EQ(just_released, PageState::kMappedFree);  // (a stalled test thread can't tell)
  }
  ASSERT_TRUE(WaitFor([&] { return StateOf(rt(), base + kPage) == PageState::kZero; }));
  EXPECT_GE(std::chrono::steady_clock::now() - released_at, std::chrono::milliseconds(100));
  EXPECT_EQ(StateOf(rt(), base), PageState::kZero);
  // The worker counts the unmaps and gives the handles back just after it marks the pages ZERO.
  ASSERT_TRUE(WaitFor([&] { return StatsOf(rt()).unmaps >= 2 && t_.budget->charged() == 0; }));
  DeviceStats s = StatsOf(rt());
  EXPECT_EQ(s.unmaps, 2U);
  EXPECT_EQ(s.mapped_free_bytes, 0U);
  EXPECT_EQ(t_.budget->charged(), 0U);  // max_reserved_pages = 0: handles released
}

TEST_F(LazyRegionTest, TrimKeepsTheMapAheadReserveOfLowestPages) {
  Config c = QuietConfig();
  c.trim_delay_ms = 0;
  c.map_ahead_pages = 1;
  std::uint64_t base = Create(6 * kPage, c);
  ASSERT_TRUE(AcquireOne(rt(), base + 2 * kPage, 3 * kPage).ok());  // pages 2..4
  ASSERT_TRUE(WaitFor([&] { return StateOf(rt(), base) == PageState::kMappedFree; }));
  ASSERT_TRUE(ReleaseOne(rt(), base + 2 * kPage, 3 * kPage).ok());
  // The worker keeps the lowest MAPPED_FREE page (the reserve) and trims the rest.
  ASSERT_TRUE(WaitFor([&] {
    return StateOf(rt(), base + 3 * kPage) == PageState::kZero &&
           StateOf(rt(), base + 4 * kPage) == PageState::kZero &&
           StateOf(rt(), base + 2 * kPage) == PageState::kZero;
  }));
  EXPECT_EQ(StateOf(rt(), base), PageState::kMappedFree);
}

TEST_F(LazyRegionTest, RuntimeTrimGivesBackEveryFreePageNow) {
  Config c = QuietConfig();
  c.max_reserved_pages = 4;
  std::uint64_t base = Create(4 * kPage, c);
  ASSERT_TRUE(AcquireOne(rt(), base, 4 * kPage).ok());
  ASSERT_TRUE(ReleaseOne(rt(), base + kPage, 3 * kPage).ok());
  ASSERT_TRUE(rt().Trim(0).ok());
  EXPECT_EQ(StateOf(rt(), base), PageState::kInUse);
  for (int p = 1; p < 4; ++p) EXPECT_EQ(StateOf(rt(), base + p * kPage), PageState::kZero);
  DeviceStats s = StatsOf(rt());
  EXPECT_EQ(s.pool_bytes, 0U);  // nothing kept in reserve either
  EXPECT_EQ(t_.budget->charged(), kPage);
  EXPECT_EQ(s.unmaps, 3U);
}

TEST_F(LazyRegionTest, AnExplicitTrimLeavesMapAheadOffUntilTheRegionsNextAcquire) {
  // An engine going idle trims: its regions keep no pages mapped ahead, also once the pool's
  // hold after a give-back has ended; the next acquire brings map-ahead back.
  Config c = QuietConfig();
  c.map_ahead_pages = 2;
  std::uint64_t base = Create(8 * kPage, c);
  ASSERT_TRUE(AcquireOne(rt(), base, kPage).ok());
  ASSERT_TRUE(WaitFor([&] { return StatsOf(rt()).mapped_free_bytes == 2 * kPage; }));
  ASSERT_TRUE(ReleaseOne(rt(), base, kPage).ok());
  ASSERT_TRUE(rt().Trim(0).ok());
  EXPECT_EQ(StatsOf(rt()).mapped_free_bytes, 0U);
  std::this_thread::sleep_for(std::chrono::nanoseconds(PagePool::kHoldNs) +
                              std::chrono::milliseconds(300));
  EXPECT_EQ(StatsOf(rt()).mapped_free_bytes, 0U) << "map-ahead refilled a resting region";
  EXPECT_EQ(t_.budget->charged(), 0U);
  ASSERT_TRUE(AcquireOne(rt(), base + 4 * kPage, kPage).ok());
  EXPECT_TRUE(WaitFor([&] { return StatsOf(rt()).mapped_free_bytes == 2 * kPage; }))
      << "map-ahead did not resume at the next acquire";
}

// An engine backing `pages` pages a step, `steps` steps 10 ms apart, from the region's start.
void AcquireInSteps(Runtime& rt, std::uint64_t base, int steps, std::uint64_t pages) {
  for (int step = 0; step < steps; ++step) {
    ASSERT_TRUE(AcquireOne(rt, base + step * pages * kPage, pages * kPage).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST_F(LazyRegionTest, MapAheadFollowsABurstOfAcquiresThenFallsBackToItsFixedReserve) {
  // After a few steps of 4 pages the pool keeps more than the fixed one page mapped ahead, so the
  // next step's acquire swaps nothing on the engine's thread; about a second after the burst
  // the reserve is one page again.
  Config c = QuietConfig();
  c.map_ahead_pages = 1;
  c.map_ahead_burst_pages = 16;
  c.trim_delay_ms = 0;
  std::uint64_t base = Create(64 * kPage, c);
  ASSERT_NO_FATAL_FAILURE(AcquireInSteps(rt(), base, 8, 4));
  ASSERT_TRUE(WaitFor([&] { return StatsOf(rt()).mapped_free_bytes >= 8 * kPage; }))
      << "the reserve stayed at " << StatsOf(rt()).mapped_free_bytes / kPage << " pages";
  EXPECT_LE(StatsOf(rt()).mapped_free_bytes, 16 * kPage);
  const std::uint64_t sync_maps = StatsOf(rt()).sync_maps;
  ASSERT_TRUE(AcquireOne(rt(), base + 32 * kPage, 4 * kPage).ok());
  EXPECT_EQ(StatsOf(rt()).sync_maps, sync_maps) << "the step after the burst waited for the driver";
  ASSERT_TRUE(WaitFor([&] { return StatsOf(rt()).mapped_free_bytes == kPage; },
                      std::chrono::milliseconds(3000)))
      << "the burst's reserve was not trimmed back to one page";
}

TEST_F(LazyRegionTest, WithTheBurstReserveOffMapAheadKeepsItsFixedPages) {
  Config c = QuietConfig();
  c.map_ahead_pages = 1;
  c.map_ahead_burst_pages = 0;
  std::uint64_t base = Create(64 * kPage, c);
  ASSERT_NO_FATAL_FAILURE(AcquireInSteps(rt(), base, 8, 4));
  ASSERT_TRUE(WaitFor([&] { return StatsOf(rt()).mapped_free_bytes == kPage; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(StatsOf(rt()).mapped_free_bytes, kPage);
}

TEST_F(LazyRegionTest, DestroyReturnsEverythingEvenWithPagesInUse) {
  std::uint64_t base = Create(8 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base, 3 * kPage).ok());
  ASSERT_TRUE(rt().DestroyRegion(base).ok());
  EXPECT_EQ(rt().Info(base).status().code(), Errc::kNotFound);
  EXPECT_EQ(AcquireOne(rt(), base, 1).code(), Errc::kNotFound);
  EXPECT_EQ(t_.budget->View().in_use, 0U);
  EXPECT_EQ(t_.budget->charged(), 0U);
  EXPECT_EQ(t_.budget->View().others, kPage);  // the zero page stays while the pool lives
  EXPECT_EQ(rt().DestroyRegion(base).code(), Errc::kNotFound);
}

TEST_F(LazyRegionTest, ConcurrentAcquiresOfDifferentPagesAreConsistent) {
  Config c = QuietConfig();
  c.map_ahead_pages = 2;
  c.trim_delay_ms = 0;
  c.max_reserved_pages = 2;
  std::uint64_t base = Create(32 * kPage, c);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        std::uint64_t page = static_cast<std::uint64_t>((t * 8) + (i % 8));
        std::uint64_t addr = base + page * kPage + 512;
        if (!AcquireOne(rt(), addr, 1024).ok()) ++failures;
        // The page is ours: it must be IN_USE and writable.
        std::memset(reinterpret_cast<void*>(addr), t + 1, 1024);
        if (StateOf(rt(), addr) != PageState::kInUse) ++failures;
        if (!ReleaseOne(rt(), addr, 1024).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto info = rt().Info(base);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info.value().in_use_pages, 0U);
  EXPECT_EQ(info.value().zero_pages + info.value().mapped_free_pages, 32U);
  EXPECT_EQ(t_.budget->View().in_use, 0U);
}

// ---------- Eager regions ----------

TEST_F(LazyRegionTest, EagerRegionIsBackedByOneAllocationAndOneSetAccess) {
  t_ = MakeRuntime(QuietConfig());
  std::uint64_t creates = CallCount("cuMemCreate");
  std::uint64_t access = CallCount("cuMemSetAccess");
  auto base = rt().CreateRegion(0, 7 * kMiB, RegionKind::kEager);
  ASSERT_TRUE(base.ok()) << base.status().message();
  EXPECT_EQ(CallCount("cuMemCreate") - creates, 1U);
  EXPECT_EQ(CallCount("cuMemSetAccess") - access, 1U);
  auto info = rt().Info(base.value());
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info.value().size, 8 * kMiB);
  EXPECT_EQ(info.value().in_use_pages, 4U);
  EXPECT_EQ(info.value().kind, RegionKind::kEager);
  EXPECT_EQ(StateOf(rt(), base.value() + 5 * kMiB), PageState::kInUse);
  EXPECT_TRUE(AcquireOne(rt(), base.value(), 100).ok());
  EXPECT_TRUE(ReleaseOne(rt(), base.value(), 100).ok());
  std::memset(reinterpret_cast<void*>(base.value()), 7, 8 * kMiB);  // all backed
  EXPECT_EQ(t_.budget->View().in_use, 8 * kMiB);
  EXPECT_EQ(StatsOf(rt()).zero_page_bytes, 0U);  // eager needs no zero page...
  EXPECT_EQ(t_.budget->heartbeats_.load(), 0U);  // ...and no worker thread
  EXPECT_EQ(StatsOf(rt()).in_use_bytes, 8 * kMiB);
  ASSERT_TRUE(rt().DestroyRegion(base.value()).ok());
  EXPECT_EQ(t_.budget->charged(), 0U);
  EXPECT_EQ(t_.budget->View().in_use, 0U);
}

TEST_F(LazyRegionTest, EagerRegionHalvesItsAllocationsWhenTheDriverRefusesOne) {
  t_ = MakeRuntime(QuietConfig());
  std::uint64_t creates = CallCount("cuMemCreate");
  Result<std::uint64_t> base = Status();
  {
    ScopedFaults f("cuMemCreate:1:CUDA_ERROR_OUT_OF_MEMORY");
    base = rt().CreateRegion(0, 8 * kMiB, RegionKind::kEager);
  }
  ASSERT_TRUE(base.ok()) << base.status().message();
  EXPECT_EQ(CallCount("cuMemCreate") - creates, 3U);  // 8 MiB refused, then 4 + 4
  std::memset(reinterpret_cast<void*>(base.value()), 1, 8 * kMiB);
  EXPECT_EQ(t_.budget->View().in_use, 8 * kMiB);
}

TEST_F(LazyRegionTest, EagerRegionRefusedByTheBudgetLeavesNothing) {
  t_ = MakeRuntime(QuietConfig(), 4 * kMiB);
  auto base = rt().CreateRegion(0, 6 * kMiB, RegionKind::kEager);
  ASSERT_FALSE(base.ok());
  EXPECT_EQ(base.status().code(), Errc::kNoMemory);
  EXPECT_NE(base.status().message().find("budget refused 6 MiB on GPU 0"), std::string::npos)
      << base.status().message();
  EXPECT_EQ(t_.budget->charged(), 0U);
  EXPECT_EQ(StatsOf(rt()).budget_refusals, 1U);
  EXPECT_EQ(StatsOf(rt()).regions, 0U);
}

}  // namespace
}  // namespace kvcached
