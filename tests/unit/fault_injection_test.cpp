// Every driver call site of the core under injected failure: the caller gets a Status naming
// the failed call, state is rolled back, and nothing leaks (the fake's counts return to where
// they were once everything is destroyed).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/unit/runtime_test_fixture.h"

namespace kvcached {
namespace {

using namespace kvcached::testing;  // NOLINT(google-build-using-namespace)

using FaultTest = LeakCheckedRuntimeTest;

struct SiteCase {
  const char* spec;
  const char* call;
};

// Lazy region creation: the zero page (first region of the device), then the region itself.
TEST_F(FaultTest, LazyRegionCreation) {
  const SiteCase cases[] = {
      {"cuMemCreate:1", "cuMemCreate"},                  // the zero page
      {"cuMemAddressReserve:1", "cuMemAddressReserve"},  // its scratch mapping, to clear it
      {"cuMemMap:1", "cuMemMap"},
      {"cuMemSetAccess:1", "cuMemSetAccess"},
      {"cuMemsetD8:1", "cuMemsetD8"},
      {"cuCtxSynchronize:1", "cuCtxSynchronize"},
      {"cuMemAddressReserve:2", "cuMemAddressReserve"},  // the region's VA
      {"cuMemMap:3", "cuMemMap"},                        // the region's second zero alias
      {"cuMemSetAccess:2", "cuMemSetAccess"},            // the region's one set-access
  };
  for (const SiteCase& c : cases) {
    SCOPED_TRACE(c.spec);
    FakeCounts before = Counts();
    t_ = MakeRuntime(QuietConfig());
    {
      ScopedFaults f(c.spec);
      ASSERT_TRUE(f.ok());
      auto r = rt().CreateRegion(0, 4 * kPage, RegionKind::kLazy);
      ExpectNames(r.status(), c.call);
    }
    EXPECT_EQ(StatsOf(rt()).regions, 0U);
    // Recoverable: the same call works once the driver does.
    auto again = rt().CreateRegion(0, 4 * kPage, RegionKind::kLazy);
    ASSERT_TRUE(again.ok()) << again.status().message();
    EXPECT_TRUE(AllReadable(again.value(), 4));
    t_.rt.reset();
    EXPECT_TRUE(NoLeaksSince(before));
  }
}

// A foreground miss of two contiguous pages, failing at each driver call in turn.
TEST_F(FaultTest, AcquireMissRollsBack) {
  const SiteCase cases[] = {
      {"cuMemCreate:1:CUDA_ERROR_OUT_OF_MEMORY", "cuMemCreate"},
      {"cuMemCreate:2", "cuMemCreate"},
      {"cuCtxGetCurrent:1", "cuCtxGetCurrent"},
      {"cuMemUnmap:1", "cuMemUnmap"},  // the first page's zero alias
      {"cuMemUnmap:2", "cuMemUnmap"},  // the second's (the first is re-aliased)
      {"cuMemMap:1", "cuMemMap"},
      {"cuMemMap:2", "cuMemMap"},
      {"cuMemSetAccess:1", "cuMemSetAccess"},
  };
  t_ = MakeRuntime(QuietConfig());
  std::uint64_t base = Lazy(4 * kPage);
  for (const SiteCase& c : cases) {
    SCOPED_TRACE(c.spec);
    std::uint64_t charged = t_.budget->charged();
    {
      ScopedFaults f(c.spec);
      ASSERT_TRUE(f.ok());
      Status st = AcquireOne(rt(), base + kPage, 2 * kPage);
      ExpectNames(st, c.call);
      if (std::string(c.spec).find("OUT_OF_MEMORY") != std::string::npos) {
        EXPECT_EQ(st.code(), Errc::kNoMemory);
      } else {
        EXPECT_EQ(st.code(), Errc::kDriver);
      }
    }
    EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kZero);
    EXPECT_EQ(StateOf(rt(), base + 2 * kPage), PageState::kZero);
    EXPECT_EQ(t_.budget->charged(), charged);  // no page kept (max_reserved_pages = 0)
    EXPECT_EQ(t_.budget->View().in_use, 0U);
    EXPECT_TRUE(AllReadable(base, 4));  // every zero alias was restored, with access
  }
  ASSERT_TRUE(AcquireOne(rt(), base + kPage, 2 * kPage).ok());
  EXPECT_EQ(StateOf(rt(), base + 2 * kPage), PageState::kInUse);
}

// A miss spanning two runs of ZERO pages (1-2 and 4) around a warm page (3): when the second
// run fails, the first is swapped back out.
TEST_F(FaultTest, AcquireAcrossRunsUndoesTheRunsThatSucceeded) {
  t_ = MakeRuntime(QuietConfig());
  std::uint64_t base = Lazy(6 * kPage);
  ASSERT_TRUE(AcquireOne(rt(), base + 3 * kPage, 1).ok());
  ASSERT_TRUE(ReleaseOne(rt(), base + 3 * kPage, 1).ok());
  std::uint64_t unmaps = StatsOf(rt()).unmaps;
  {
    ScopedFaults f("cuMemSetAccess:2");  // the second run's set-access
    ExpectNames(AcquireOne(rt(), base + kPage, 4 * kPage), "cuMemSetAccess");
  }
  EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kZero);
  EXPECT_EQ(StateOf(rt(), base + 2 * kPage), PageState::kZero);
  EXPECT_EQ(StateOf(rt(), base + 3 * kPage), PageState::kMappedFree);
  EXPECT_EQ(StateOf(rt(), base + 4 * kPage), PageState::kZero);
  EXPECT_EQ(StatsOf(rt()).unmaps - unmaps, 2U);  // the first run, undone
  EXPECT_TRUE(AllReadable(base, 6));
  ASSERT_TRUE(AcquireOne(rt(), base + kPage, 4 * kPage).ok());
}

// Swapping out (trim): an unmap failure keeps the page backed; a failure to re-alias leaves a
// hole that the background thread repairs.
TEST_F(FaultTest, TrimFailures) {
  t_ = MakeRuntime(QuietConfig());
  std::uint64_t base = Lazy(4 * kPage);
  auto make_free = [&] {
    ASSERT_TRUE(AcquireOne(rt(), base + kPage, 1).ok());
    ASSERT_TRUE(ReleaseOne(rt(), base + kPage, 1).ok());
  };

  make_free();
  {
    ScopedFaults f("cuMemUnmap:1");
    ExpectNames(rt().Trim(0), "cuMemUnmap");
  }
  EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kMappedFree);  // still backed, still ours
  ASSERT_TRUE(rt().Trim(0).ok());
  EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kZero);

  for (const char* spec : {"cuMemMap:1", "cuMemSetAccess:1"}) {
    SCOPED_TRACE(spec);
    make_free();
    std::uint64_t maps = CallCount("cuMemMap");
    {
      ScopedFaults f(spec);
      ExpectNames(rt().Trim(0), std::string(spec).substr(0, std::string(spec).find(':')));
    }
    EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kZero);
    // The worker re-aliases the hole (one more cuMemMap than the failed swap made).
    ASSERT_TRUE(WaitFor([&] { return CallCount("cuMemMap") >= maps + 2; }));
    ASSERT_TRUE(WaitFor([&] { return AllReadable(base, 4); }, std::chrono::seconds(2)));
  }

  make_free();
  {
    ScopedFaults f("cuMemRelease:1");  // releasing the trimmed page: retried
    EXPECT_TRUE(rt().Trim(0).ok());
  }
  EXPECT_EQ(t_.budget->charged(), 0U);  // all trimmed (the zero page is outside the budget)
}

TEST_F(FaultTest, DestroyRetriesTransientFailures) {
  t_ = MakeRuntime(QuietConfig());
  for (const char* spec : {"cuMemUnmap:1", "cuMemUnmap:3", "cuMemAddressFree:1"}) {
    SCOPED_TRACE(spec);
    std::uint64_t base = Lazy(4 * kPage);
    ASSERT_TRUE(AcquireOne(rt(), base, kPage).ok());
    ScopedFaults f(spec);
    EXPECT_TRUE(rt().DestroyRegion(base).ok());
  }
  EXPECT_EQ(t_.budget->View().in_use, 0U);
}

TEST_F(FaultTest, EagerRegionCreation) {
  const SiteCase cases[] = {
      {"cuMemAddressReserve:1", "cuMemAddressReserve"},
      {"cuMemCreate:1+:CUDA_ERROR_OUT_OF_MEMORY", "cuMemCreate"},  // even one page refused
      {"cuMemMap:1", "cuMemMap"},
      {"cuMemMap:2", "cuMemMap"},
      {"cuMemSetAccess:1", "cuMemSetAccess"},
  };
  t_ = MakeRuntime(QuietConfig());
  for (const SiteCase& c : cases) {
    SCOPED_TRACE(c.spec);
    Result<std::uint64_t> r = Status();
    {
      ScopedFaults f(c.spec);
      // 3 pages: refusing the 6 MiB handle makes 2 + 2 + 2 MiB ones, so "cuMemMap:2" is real.
      r = rt().CreateRegion(0, 3 * kPage, RegionKind::kEager);
      if (std::string(c.spec) == "cuMemMap:2") {
        ASSERT_TRUE(r.ok());  // one handle, one map: the fault is not reached
        ASSERT_TRUE(rt().DestroyRegion(r.value()).ok());
        ScopedFaults g("cuMemCreate:1,cuMemMap:2");
        r = rt().CreateRegion(0, 3 * kPage, RegionKind::kEager);
      }
    }
    ExpectNames(r.status(), c.call);
    EXPECT_EQ(t_.budget->charged(), 0U);
    EXPECT_EQ(t_.budget->View().in_use, 0U);
    EXPECT_EQ(StatsOf(rt()).regions, 0U);
  }
}

// Map-ahead failing in the background is retried on later passes, leaking nothing.
TEST_F(FaultTest, MapAheadFailuresAreRetried) {
  Config c = QuietConfig();
  c.map_ahead_pages = 2;
  t_ = MakeRuntime(c, 0);  // no room: the worker cannot map ahead yet
  std::uint64_t base = Lazy(4 * kPage);
  // Map-ahead begins at the region's first acquire (refused here: no driver call).
  ASSERT_EQ(AcquireOne(rt(), base + 3 * kPage, kPage).code(), Errc::kNoMemory);
  // Map-ahead of pages 0-1: the second real map fails (page 0 is rolled back); the next pass
  // gets one new page only (cuMemCreate:4) and its set-access fails; the pass after succeeds.
  ScopedFaults f("cuMemMap:2,cuMemSetAccess:3,cuMemCreate:4");
  t_.budget->SetLimit(1ULL << 40);
  ASSERT_TRUE(WaitFor([&] { return rt().Info(base).value().mapped_free_pages == 2; }));
  EXPECT_EQ(StateOf(rt(), base), PageState::kMappedFree);
  EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kMappedFree);
  EXPECT_TRUE(AllReadable(base, 4));
}

TEST_F(FaultTest, DeviceStateCreation) {
  for (const char* call :
       {"cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetAttribute", "cuMemGetAllocationGranularity",
        "cuDeviceGetUuid", "cuDeviceTotalMem", "cuDevicePrimaryCtxRetain"}) {
    SCOPED_TRACE(call);
    auto created = Runtime::Create(QuietConfig());
    ASSERT_TRUE(created.ok());
    {
      ScopedFaults f(std::string(call) + ":1");
      auto r = created.value()->CreateRegion(0, kPage, RegionKind::kLazy);
      ExpectNames(r.status(), call);
    }
    EXPECT_TRUE(created.value()->CreateRegion(0, kPage, RegionKind::kLazy).ok());
  }
}

TEST_F(FaultTest, DriverInitialisation) {
  ScopedFaults f("cuInit:1:CUDA_ERROR_NO_DEVICE");
  auto created = Runtime::Create(QuietConfig());
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.status().message().find("cuInit failed: CUDA_ERROR_NO_DEVICE"),
            std::string::npos)
      << created.status().message();
}

// The same failures armed through the environment (FAKECUDA_FAIL), as CI scripts do it.
TEST(FaultEnvTest, FailuresFromTheEnvironment) {
  if (!InChild()) {
    ChildResult r =
        RunSelf("FaultEnvTest.*", {{"FAKECUDA_FAIL", "cuMemCreate:2+:CUDA_ERROR_OUT_OF_MEMORY"},
                                   {"FAKECUDA_LEAK_CHECK", "1"}});
    EXPECT_TRUE(r.ExitedWith(0)) << r.Describe() << "\n" << r.output;
    return;
  }
  auto created = Runtime::Create(QuietConfig());
  ASSERT_TRUE(created.ok());
  Runtime& rt = *created.value();
  auto base = rt.CreateRegion(0, 4 * kPage, RegionKind::kLazy);  // zero page: call 1
  ASSERT_TRUE(base.ok()) << base.status().message();
  Status st = AcquireOne(rt, base.value(), 1);
  EXPECT_EQ(st.code(), Errc::kNoMemory);
  EXPECT_NE(st.message().find("cuMemCreate failed: CUDA_ERROR_OUT_OF_MEMORY"), std::string::npos);
  EXPECT_EQ(StateOf(rt, base.value()), PageState::kZero);
  created.value().reset();  // FAKECUDA_LEAK_CHECK makes the child exit 97 on any leak
}

}  // namespace
}  // namespace kvcached
