// Multi-page zero aliases (KVCACHED_ZERO_CHUNK_MB): unbacked pages are aliased in aligned chunks
// of 1, 2 and 4 pages, a burst over fresh chunks unmaps one alias per chunk, a partial chunk is
// split with the rest of it re-aliased, and every driver failure on the way leaves every page
// readable (a stray access never faults) and nothing leaked.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "tests/unit/runtime_test_fixture.h"

namespace kvcached {
namespace {

using namespace kvcached::testing;  // NOLINT(google-build-using-namespace)

constexpr std::uint64_t kChunkPages = 4;
constexpr std::uint64_t kZeroBytes = (1 + 2 + 4) * kPage;  // one zero handle per chunk size

Config ChunkConfig() {
  Config c = QuietConfig();
  c.zero_chunk_mb = kChunkPages * kPage >> 20U;
  return c;
}

// Driver calls made while running fn.
struct Calls {
  std::uint64_t maps = 0;
  std::uint64_t unmaps = 0;
  std::uint64_t access = 0;
};
template <class Fn>
Calls Count(Fn&& fn) {
  const Calls before{CallCount("cuMemMap"), CallCount("cuMemUnmap"), CallCount("cuMemSetAccess")};
  fn();
  return {CallCount("cuMemMap") - before.maps, CallCount("cuMemUnmap") - before.unmaps,
          CallCount("cuMemSetAccess") - before.access};
}

class ZeroChunkTest : public LeakCheckedRuntimeTest {
 protected:
  void SetUp() override {
    LeakCheckedRuntimeTest::SetUp();
    if (IsSkipped()) return;
    t_ = MakeRuntime(ChunkConfig());
  }
};

TEST_F(ZeroChunkTest, CreationAliasesInChunksAndCountsTheZeroMemoryOutsideTheBudget) {
  std::uint64_t base = 0;
  Calls c = Count([&] { base = Lazy(10 * kPage); });
  // Three zero handles, each mapped once to be cleared; then chunks [0,4) [4,8) [8,10) and one
  // set-access for the region.
  EXPECT_EQ(c.maps, 3U + 3U);
  EXPECT_EQ(c.access, 3U + 1U);
  EXPECT_EQ(StatsOf(rt()).zero_page_bytes, kZeroBytes);
  EXPECT_EQ(t_.budget->charged(), 0U);
  EXPECT_EQ(t_.budget->View().others, kZeroBytes);
  EXPECT_TRUE(AllReadable(base, 10));

  std::uint64_t second = 0;
  c = Count([&] { second = Lazy(3 * kPage); });  // [0,2) [2,3); the zero memory exists already
  EXPECT_EQ(c.maps, 2U);
  EXPECT_EQ(c.access, 1U);
  EXPECT_EQ(t_.budget->View().others, kZeroBytes);
  EXPECT_TRUE(AllReadable(second, 3));
}

// The first lazy region makes the three zero handles (each: create, reserve + map + access to
// clear it, memset, sync, unmap, free) and then its own chunks. A failure anywhere is reported,
// leaves no region and no count, and the next attempt works.
TEST_F(ZeroChunkTest, CreationFailuresLeaveNothingBehind) {
  const char* const specs[] = {
      "cuMemCreate:2",     // the 2-page zero handle
      "cuMemCreate:3",     // the 4-page one
      "cuMemMap:3",        // clearing the 4-page one
      "cuMemsetD8:2",      // clearing the 2-page one
      "cuMemMap:5",        // the region's second chunk
      "cuMemSetAccess:4",  // the region's one set-access
  };
  for (const char* spec : specs) {
    SCOPED_TRACE(spec);
    t_ = MakeRuntime(ChunkConfig());
    {
      ScopedFaults f(spec);
      ASSERT_TRUE(f.ok());
      auto r = rt().CreateRegion(0, 10 * kPage, RegionKind::kLazy);
      ASSERT_FALSE(r.ok());
      ExpectNames(r.status(), std::string(spec).substr(0, std::string(spec).find(':')));
    }
    EXPECT_EQ(StatsOf(rt()).regions, 0U);
    // The zero memory stays only if it was made (the region's own calls failed).
    const std::uint64_t zero = StatsOf(rt()).zero_page_bytes;
    EXPECT_TRUE(zero == 0 || zero == kZeroBytes) << zero;
    EXPECT_EQ(t_.budget->View().others, zero);
    EXPECT_EQ(t_.budget->charged(), 0U);
    auto again = rt().CreateRegion(0, 10 * kPage, RegionKind::kLazy);
    ASSERT_TRUE(again.ok()) << again.status().message();
    EXPECT_TRUE(AllReadable(again.value(), 10));
    EXPECT_EQ(t_.budget->View().others, kZeroBytes);
  }
}

TEST_F(ZeroChunkTest, ABurstUnmapsOneAliasPerChunkAndTrimRebuildsTheChunks) {
  constexpr std::uint64_t kPages = 16;
  std::uint64_t base = Lazy(kPages * kPage);
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(round);
    Calls in = Count([&] { ASSERT_TRUE(AcquireOne(rt(), base, kPages * kPage).ok()); });
    EXPECT_EQ(in.unmaps, kPages / kChunkPages);  // not one per page
    EXPECT_EQ(in.maps, kPages);
    EXPECT_EQ(in.access, 1U);
    for (std::uint64_t p = 0; p < kPages; ++p) {
      EXPECT_EQ(StateOf(rt(), base + p * kPage), PageState::kInUse);
    }
    ASSERT_TRUE(ReleaseOne(rt(), base, kPages * kPage).ok());
    Calls out = Count([&] { ASSERT_TRUE(rt().Trim(0).ok()); });
    EXPECT_EQ(out.unmaps, kPages);              // the real pages
    EXPECT_EQ(out.maps, kPages / kChunkPages);  // whole chunks again
    EXPECT_EQ(out.access, 1U);
    EXPECT_TRUE(AllReadable(base, kPages));
  }
}

TEST_F(ZeroChunkTest, APartialChunkIsSplitAndItsOtherPagesStayAliased) {
  constexpr std::uint64_t kPages = 8;
  std::uint64_t base = Lazy(kPages * kPage);
  Calls c = Count([&] { ASSERT_TRUE(AcquireOne(rt(), base + kPage, kPage).ok()); });
  EXPECT_EQ(c.unmaps, 1U);  // the chunk [0,4)
  EXPECT_EQ(c.maps, 3U);    // the rest of it as [0,1) and [2,4), and the real page
  EXPECT_TRUE(AllReadable(base, kPages));
  std::memset(reinterpret_cast<void*>(base + kPage), 0xA5, kPage);

  // Stray writes into every unbacked page never reach the backed one.
  for (std::uint64_t p = 0; p < kPages; ++p) {
    if (p != 1) std::memset(reinterpret_cast<void*>(base + p * kPage), 0x5A, kPage);
  }
  const std::vector<unsigned char> a5(kPage, 0xA5);
  EXPECT_EQ(std::memcmp(reinterpret_cast<void*>(base + kPage), a5.data(), kPage), 0);

  c = Count([&] { ASSERT_TRUE(AcquireOne(rt(), base + 2 * kPage, kPage).ok()); });
  EXPECT_EQ(c.unmaps, 1U);  // [2,4)
  EXPECT_EQ(c.maps, 2U);    // [3,4) and the real page
  EXPECT_TRUE(AllReadable(base, kPages));
  EXPECT_EQ(std::memcmp(reinterpret_cast<void*>(base + kPage), a5.data(), kPage), 0);
  EXPECT_EQ(StateOf(rt(), base + 3 * kPage), PageState::kZero);

  ASSERT_TRUE(ReleaseOne(rt(), base + kPage, 2 * kPage).ok());
  ASSERT_TRUE(rt().Trim(0).ok());
  EXPECT_TRUE(AllReadable(base, kPages));
  for (std::uint64_t p = 0; p < kPages; ++p) {
    EXPECT_EQ(StateOf(rt(), base + p * kPage), PageState::kZero);
  }
}

struct FailCase {
  const char* spec;
  const char* call;  // nullptr: the acquire succeeds (the failure is repaired in the background)
};

// Backing page 1 of a fresh 4-page chunk makes, in order: one unmap (the chunk), map + access
// for [0,1), map + access for [2,4), map of the real page, access for it.
TEST_F(ZeroChunkTest, EveryDriverFailureInASplitLeavesEveryPageReadable) {
  const FailCase cases[] = {
      {"cuMemUnmap:1", "cuMemUnmap"},         {"cuMemMap:1", nullptr},
      {"cuMemSetAccess:1", nullptr},          {"cuMemMap:2", nullptr},
      {"cuMemSetAccess:2", nullptr},          {"cuMemMap:3", "cuMemMap"},
      {"cuMemSetAccess:3", "cuMemSetAccess"},
  };
  for (const FailCase& fc : cases) {
    SCOPED_TRACE(fc.spec);
    std::uint64_t base = Lazy(4 * kPage);
    Status st;
    {
      ScopedFaults f(fc.spec);
      ASSERT_TRUE(f.ok());
      st = AcquireOne(rt(), base + kPage, kPage);
    }
    if (fc.call == nullptr) {
      EXPECT_TRUE(st.ok()) << st.message();
      EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kInUse);
    } else {
      ExpectNames(st, fc.call);
      EXPECT_EQ(StateOf(rt(), base + kPage), PageState::kZero);
      EXPECT_EQ(t_.budget->View().in_use, 0U);
    }
    // Pages left without a working alias are re-aliased by the pool's worker.
    EXPECT_TRUE(WaitFor([&] { return AllReadable(base, 4); }, std::chrono::seconds(3)));
    if (st.ok()) {
      ASSERT_TRUE(ReleaseOne(rt(), base + kPage, kPage).ok());
    }
    // Everything still works on this region.
    ASSERT_TRUE(AcquireOne(rt(), base, 4 * kPage).ok());
    ASSERT_TRUE(ReleaseOne(rt(), base, 4 * kPage).ok());
    ASSERT_TRUE(rt().Trim(0).ok());
    EXPECT_TRUE(AllReadable(base, 4));
    ASSERT_TRUE(rt().DestroyRegion(base).ok());
  }
  EXPECT_EQ(t_.budget->charged(), 0U);  // nothing leaked (the zero memory is outside)
  EXPECT_EQ(t_.budget->View().others, kZeroBytes);
}

// Swap-out failures: an unmap that fails keeps the page backed; an alias that cannot be made is
// a hole, repaired by the worker.
TEST_F(ZeroChunkTest, SwapOutFailuresKeepThePageOrRepairTheHole) {
  std::uint64_t base = Lazy(8 * kPage);
  for (const char* spec : {"cuMemUnmap:2", "cuMemMap:1", "cuMemSetAccess:1"}) {
    SCOPED_TRACE(spec);
    ASSERT_TRUE(AcquireOne(rt(), base, 4 * kPage).ok());
    ASSERT_TRUE(ReleaseOne(rt(), base, 4 * kPage).ok());
    {
      ScopedFaults f(spec);
      EXPECT_FALSE(rt().Trim(0).ok());
    }
    EXPECT_TRUE(WaitFor([&] { return AllReadable(base, 8); }, std::chrono::seconds(3)));
    ASSERT_TRUE(rt().Trim(0).ok());
    for (std::uint64_t p = 0; p < 8; ++p) {
      EXPECT_EQ(StateOf(rt(), base + p * kPage), PageState::kZero);
    }
  }
}

}  // namespace
}  // namespace kvcached
