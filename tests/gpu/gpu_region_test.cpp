// Page states of lazy regions on the real driver: ZERO -> IN_USE -> MAPPED_FREE -> ZERO, with
// kernels proving that backed pages are real memory and that trimmed pages read the zero page.
#include <chrono>
#include <thread>

#include "tests/gpu/gpu_fixture.h"

namespace kvcached::gputest {
namespace {

class GpuRegionTest : public GpuTest {
 protected:
  // Deterministic pool: nothing mapped ahead, nothing trimmed behind the test's back.
  static Config Quiet() {
    Config c = BaseConfig();
    c.map_ahead_pages = 0;
    c.map_ahead_burst_pages = 0;
    c.trim_delay_ms = 60000;
    c.page_prealloc = false;
    c.min_reserved_pages = 0;
    return c;
  }
};

TEST_F(GpuRegionTest, NewLazyRegionIsAllZeroPagesAndReadsZeros) {
  ASSERT_NO_FATAL_FAILURE(StartRuntime(Quiet()));
  const std::uint64_t base = Create(16 * page_, RegionKind::kLazy);
  ASSERT_NE(base, 0U);
  const RegionInfo info = InfoOf(base);
  EXPECT_EQ(info.base, base);
  EXPECT_EQ(info.size, 16 * page_);
  EXPECT_EQ(info.pages, 16U);
  EXPECT_EQ(info.zero_pages, 16U);
  EXPECT_EQ(info.in_use_pages + info.mapped_free_pages, 0U);
  EXPECT_EQ(info.kind, RegionKind::kLazy);
  for (std::uint64_t p = 0; p < 16; ++p) EXPECT_EQ(StateAt(base + p * page_), PageState::kZero);
  // A kernel reads the whole unbacked region without faulting, and reads zeros.
  EXPECT_EQ(Val(NonZeroWords(base, 16 * page_)), 0U);
  KVC_EXPECT_OK(rt_->DestroyRegion(base));
}

TEST_F(GpuRegionTest, PageStatesFollowAcquireReleaseTrim) {
  ASSERT_NO_FATAL_FAILURE(StartRuntime(Quiet()));
  const std::uint64_t base = Create(8 * page_, RegionKind::kLazy);
  ASSERT_NE(base, 0U);
  const std::uint64_t p2 = base + 2 * page_;

  KVC_ASSERT_OK(Acquire(p2, page_));
  EXPECT_EQ(StateAt(p2), PageState::kInUse);
  EXPECT_EQ(StateAt(p2 - page_), PageState::kZero);
  EXPECT_EQ(StateAt(p2 + page_), PageState::kZero);
  EXPECT_GE(Stats().in_use_bytes, page_);
  // The page is real memory: what a kernel writes there reads back, and its neighbours (still
  // the zero page) stay zero.
  KVC_ASSERT_OK(Fill(p2, page_, 11));
  EXPECT_EQ(Val(Mismatches(p2, page_, 11)), 0U);
  EXPECT_EQ(Val(NonZeroWords(p2 + page_, page_)), 0U);

  KVC_ASSERT_OK(Release(p2, page_));
  EXPECT_EQ(StateAt(p2), PageState::kMappedFree);
  EXPECT_EQ(InfoOf(base).mapped_free_pages, 1U);

  // Re-acquiring a page that is still mapped needs no swap.
  const std::uint64_t maps = Stats().maps;
  KVC_ASSERT_OK(Acquire(p2, page_));
  EXPECT_EQ(StateAt(p2), PageState::kInUse);
  EXPECT_EQ(Stats().maps, maps);
  KVC_ASSERT_OK(Release(p2, page_));

  KVC_ASSERT_OK(rt_->Trim(kDevice));
  EXPECT_EQ(StateAt(p2), PageState::kZero);
  const RegionInfo info = InfoOf(base);
  EXPECT_EQ(info.zero_pages, info.pages);
  const DeviceStats st = Stats();
  EXPECT_EQ(st.in_use_bytes, 0U);
  EXPECT_EQ(st.mapped_free_bytes, 0U);
  // Trimmed: the address reads the zero page again, not the pattern.
  EXPECT_EQ(Val(NonZeroWords(p2, page_)), 0U);
  KVC_EXPECT_OK(rt_->DestroyRegion(base));
}

TEST_F(GpuRegionTest, PagesSharedByRangesAreReferenceCounted) {
  ASSERT_NO_FATAL_FAILURE(StartRuntime(Quiet()));
  const std::uint64_t base = Create(8 * page_, RegionKind::kLazy);
  ASSERT_NE(base, 0U);
  const std::uint64_t p4 = base + 4 * page_;
  KVC_ASSERT_OK(Acquire(p4, page_ / 2));
  KVC_ASSERT_OK(Acquire(p4 + page_ / 2, page_ / 2));
  KVC_ASSERT_OK(Release(p4, page_ / 2));
  EXPECT_EQ(StateAt(p4), PageState::kInUse);
  KVC_ASSERT_OK(Release(p4 + page_ / 2, page_ / 2));
  EXPECT_EQ(StateAt(p4), PageState::kMappedFree);

  // An unaligned range backs every page it touches (here pages 5, 6 and 7).
  KVC_ASSERT_OK(Acquire(base + 5 * page_ + 100, 2 * page_));
  for (int p = 5; p < 8; ++p) EXPECT_EQ(StateAt(base + p * page_), PageState::kInUse);
  KVC_ASSERT_OK(Fill(base + 5 * page_, 3 * page_, 3));
  EXPECT_EQ(Val(Mismatches(base + 5 * page_, 3 * page_, 3)), 0U);
  KVC_EXPECT_OK(Release(base + 5 * page_ + 100, 2 * page_));
  KVC_EXPECT_OK(rt_->DestroyRegion(base));
}

TEST_F(GpuRegionTest, MapAheadBacksPagesInTheBackground) {
  Config c = Quiet();
  c.map_ahead_pages = 2;
  ASSERT_NO_FATAL_FAILURE(StartRuntime(c));
  const std::uint64_t base = Create(16 * page_, RegionKind::kLazy);
  ASSERT_NE(base, 0U);
  KVC_ASSERT_OK(Acquire(base, page_));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (InfoOf(base).mapped_free_pages == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_GE(InfoOf(base).mapped_free_pages, 1U) << "nothing was mapped ahead within 5 s";
  // Pages mapped ahead are real memory, and acquiring them swaps nothing on this thread.
  const std::uint64_t sync_maps = Stats().sync_maps;
  int checked = 0;
  for (std::uint64_t p = 1; p < 16; ++p) {
    const std::uint64_t a = base + p * page_;
    if (StateAt(a) != PageState::kMappedFree) continue;
    KVC_ASSERT_OK(Acquire(a, page_));
    KVC_ASSERT_OK(Fill(a, page_, 20 + p));
    EXPECT_EQ(Val(Mismatches(a, page_, 20 + p)), 0U);
    ++checked;
  }
  EXPECT_GE(checked, 1);
  EXPECT_EQ(Stats().sync_maps, sync_maps);
  KVC_EXPECT_OK(rt_->DestroyRegion(base));
}

TEST_F(GpuRegionTest, BadRangesAreRefusedAndChangeNothing) {
  ASSERT_NO_FATAL_FAILURE(StartRuntime(Quiet()));
  const std::uint64_t base = Create(8 * page_, RegionKind::kLazy);
  ASSERT_NE(base, 0U);
  const Status never = Release(base, page_);
  EXPECT_EQ(never.code(), Errc::kState) << never.message();
  // Straddles the end of the region: all or nothing, so page 7 stays ZERO.
  EXPECT_FALSE(Acquire(base + 7 * page_, 2 * page_).ok());
  EXPECT_EQ(StateAt(base + 7 * page_), PageState::kZero);
  EXPECT_EQ(InfoOf(base).zero_pages, 8U);
  KVC_EXPECT_OK(rt_->DestroyRegion(base));
  EXPECT_EQ(rt_->DestroyRegion(base).code(), Errc::kNotFound);
}

}  // namespace
}  // namespace kvcached::gputest
