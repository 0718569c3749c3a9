// Eager regions and device-memory accounting on the real driver: an eager region is fully usable
// by a kernel, and destroying regions gives the device memory back (cudaMemGetInfo).
#include "tests/gpu/gpu_fixture.h"

namespace kvcached::gputest {
namespace {

class GpuEagerTest : public GpuTest {};

constexpr std::uint64_t kGiB = 1ULL << 30;
// How far free memory fell from `before` to `after` (0 if it rose).
std::uint64_t Drop(std::uint64_t before, std::uint64_t after) {
  return before > after ? before - after : 0;
}

TEST_F(GpuEagerTest, EagerRegionIsFullyBackedAndUsableByKernels) {
  ASSERT_NO_FATAL_FAILURE(StartRuntime(BaseConfig()));
  const std::uint64_t size = kGiB + 3 * page_;  // not a power of two: odd handle splits
  const std::uint64_t base = Create(size, RegionKind::kEager);
  ASSERT_NE(base, 0U);
  const RegionInfo info = InfoOf(base);
  EXPECT_EQ(info.kind, RegionKind::kEager);
  EXPECT_GE(info.size, size);
  EXPECT_EQ(info.in_use_pages, info.pages);
  EXPECT_EQ(info.zero_pages, 0U);
  KVC_ASSERT_OK(Fill(base, info.size, 42));
  EXPECT_EQ(Val(Mismatches(base, info.size, 42)), 0U);
  EXPECT_EQ(StateAt(base + info.size - 1), PageState::kInUse);
  KVC_EXPECT_OK(rt_->DestroyRegion(base));
}

TEST_F(GpuEagerTest, DestroyingRegionsReturnsDeviceMemory) {
  Config c = BaseConfig();
  c.page_prealloc = false;
  c.min_reserved_pages = 0;
  c.map_ahead_pages = 0;
  c.map_ahead_burst_pages = 0;  // nothing mapped ahead: only what is acquired may be backed
  Result<std::pair<std::uint64_t, std::uint64_t>> m0 = MemInfo();
  ASSERT_TRUE(m0.ok()) << m0.status().message();
  const std::uint64_t free0 = m0.value().first;
  ASSERT_GT(free0, 4 * kGiB) << "this test needs 4 GiB of free device memory";
  ASSERT_NO_FATAL_FAILURE(StartRuntime(c));
  // Slack for the zero page, the driver's own bookkeeping and other processes' noise.
  const std::uint64_t slack = 2 * page_ + (64ULL << 20);

  const std::uint64_t eager = Create(2 * kGiB, RegionKind::kEager);
  const std::uint64_t lazy = Create(4 * kGiB, RegionKind::kLazy);
  ASSERT_NE(eager, 0U);
  ASSERT_NE(lazy, 0U);
  KVC_ASSERT_OK(Acquire(lazy, kGiB));
  const std::uint64_t free1 = MemInfo().value().first;
  EXPECT_GE(Drop(free0, free1), 3 * kGiB) << "2 GiB eager + 1 GiB acquired must be backed";
  EXPECT_LE(Drop(free0, free1), 3 * kGiB + slack)
      << "the untouched 3 GiB of the lazy region are backed";

  KVC_ASSERT_OK(Release(lazy, kGiB));
  KVC_ASSERT_OK(rt_->DestroyRegion(lazy));
  KVC_ASSERT_OK(rt_->DestroyRegion(eager));
  KVC_ASSERT_OK(rt_->Trim(kDevice));
  const std::uint64_t free2 = MemInfo().value().first;
  EXPECT_LE(Drop(free0, free2), slack) << "memory not returned after destroy + trim";

  rt_.reset();
  const std::uint64_t free3 = MemInfo().value().first;
  EXPECT_LE(Drop(free0, free3), 64ULL << 20) << "memory not returned at shutdown";
}

}  // namespace
}  // namespace kvcached::gputest
