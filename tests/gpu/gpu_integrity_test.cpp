// Data integrity on the real driver: bytes written by a kernel into backed pages survive many
// random acquire/release/trim cycles of OTHER pages, and kernel writes into unbacked (zero-page)
// memory never reach a backed page.
#include <random>
#include <vector>

#include "tests/gpu/gpu_fixture.h"

namespace kvcached::gputest {
namespace {

class GpuIntegrityTest : public GpuTest {};

struct Held {
  std::uint64_t first = 0;  // page index
  std::uint64_t count = 0;
  std::uint32_t seed = 0;
};

TEST_F(GpuIntegrityTest, BackedPagesKeepTheirBytesAcrossChurnOfOtherPages) {
  Config c = BaseConfig();
  c.map_ahead_pages = 2;
  c.trim_delay_ms = 0;  // released pages are unmapped at once: maximum churn of mappings
  ASSERT_NO_FATAL_FAILURE(StartRuntime(c));
  constexpr std::uint64_t kPages = 256;
  constexpr std::uint64_t kKeep = 16;
  const std::uint64_t cycles = EnvCount("KVCACHED_GPU_TEST_CYCLES", kDefaultChurnCycles);
  const auto seed =
      static_cast<std::uint32_t>(EnvCount("KVCACHED_GPU_TEST_SEED", std::random_device{}()));
  SCOPED_TRACE("seed " + std::to_string(seed) + " (KVCACHED_GPU_TEST_SEED repeats it)");
  std::mt19937 rng(seed);

  const std::uint64_t base = Create(kPages * page_, RegionKind::kLazy);
  ASSERT_NE(base, 0U);
  std::vector<int> owner(kPages, 0);  // 0 free, 1 kept, 2 churn
  std::vector<std::uint64_t> keep;
  while (keep.size() < kKeep) {
    const std::uint64_t p = rng() % kPages;
    if (owner[p] != 0) continue;
    owner[p] = 1;
    keep.push_back(p);
    KVC_ASSERT_OK(Acquire(base + p * page_, page_));
    KVC_ASSERT_OK(Fill(base + p * page_, page_, 1));
  }
  auto verify_kept = [&](std::uint64_t cycle) {
    for (std::uint64_t p : keep) {
      ASSERT_EQ(Val(Mismatches(base + p * page_, page_, 1)), 0U)
          << "kept page " << p << " changed by cycle " << cycle;
    }
  };

  std::vector<Held> held;
  std::uint64_t acquires = 0;
  std::uint64_t releases = 0;
  std::uint64_t trims = 0;
  for (std::uint64_t cycle = 0; cycle < cycles; ++cycle) {
    const unsigned op = rng() % 10;
    if (op < 5) {  // back 1-4 free pages and prove each holds its own bytes
      const std::uint64_t n = 1 + rng() % 4;
      const std::uint64_t first = rng() % (kPages - n + 1);
      bool free_run = true;
      for (std::uint64_t p = first; p < first + n; ++p) free_run = free_run && owner[p] == 0;
      if (!free_run) continue;
      const auto s = static_cast<std::uint32_t>(1000 + cycle);
      KVC_ASSERT_OK(Acquire(base + first * page_, n * page_));
      KVC_ASSERT_OK(Fill(base + first * page_, n * page_, s));
      ASSERT_EQ(Val(Mismatches(base + first * page_, n * page_, s)), 0U)
          << "fresh pages " << first << "+" << n << " do not hold what was written";
      for (std::uint64_t p = first; p < first + n; ++p) owner[p] = 2;
      held.push_back({first, n, s});
      ++acquires;
    } else if (op < 9) {  // check and release one churn range
      if (held.empty()) continue;
      const std::size_t i = rng() % held.size();
      const Held h = held[i];
      ASSERT_EQ(Val(Mismatches(base + h.first * page_, h.count * page_, h.seed)), 0U)
          << "churn pages " << h.first << "+" << h.count << " changed while held";
      KVC_ASSERT_OK(Release(base + h.first * page_, h.count * page_));
      for (std::uint64_t p = h.first; p < h.first + h.count; ++p) owner[p] = 0;
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
      ++releases;
    } else {
      KVC_ASSERT_OK(rt_->Trim(kDevice));
      ++trims;
    }
    if (cycle % 250 == 0) {
      ASSERT_NO_FATAL_FAILURE(verify_kept(cycle));
    }
  }
  ASSERT_NO_FATAL_FAILURE(verify_kept(cycles));
  for (const Held& h : held) {
    EXPECT_EQ(Val(Mismatches(base + h.first * page_, h.count * page_, h.seed)), 0U);
  }
  EXPECT_GE(acquires, cycles / 10);
  EXPECT_GE(releases, cycles / 10);
  EXPECT_GT(Stats().maps, acquires);  // the churn really swapped pages in
  RecordProperty("acquires", std::to_string(acquires));
  RecordProperty("releases", std::to_string(releases));
  RecordProperty("trims", std::to_string(trims));
  KVC_EXPECT_OK(rt_->DestroyRegion(base));
}

TEST_F(GpuIntegrityTest, WritesToUnbackedPagesLandInTheZeroPageOnly) {
  Config c = BaseConfig();
  c.map_ahead_pages = 0;  // odd pages must stay unbacked
  c.map_ahead_burst_pages = 0;
  c.trim_delay_ms = 60000;
  ASSERT_NO_FATAL_FAILURE(StartRuntime(c));
  constexpr std::uint64_t kPages = 32;
  const std::uint64_t base = Create(kPages * page_, RegionKind::kLazy);
  ASSERT_NE(base, 0U);
  for (std::uint64_t p = 0; p < kPages; p += 2) {
    KVC_ASSERT_OK(Acquire(base + p * page_, page_));
    KVC_ASSERT_OK(Fill(base + p * page_, page_, 7));
  }
  // A stray kernel writes every unbacked page: no fault, and no backed page changes.
  for (std::uint64_t p = 1; p < kPages; p += 2) KVC_ASSERT_OK(Fill(base + p * page_, page_, 99));
  for (std::uint64_t p = 0; p < kPages; p += 2) {
    EXPECT_EQ(Val(Mismatches(base + p * page_, page_, 7)), 0U) << "backed page " << p;
  }
  for (std::uint64_t p = 1; p < kPages; p += 2) {
    EXPECT_EQ(StateAt(base + p * page_), PageState::kZero) << "page " << p;
  }
  // The unbacked pages all alias one zero page: they read the same (scratch) bytes.
  const std::uint64_t first = Val(Checksum(base + page_, page_));
  EXPECT_EQ(Val(Checksum(base + (kPages - 1) * page_, page_)), first);
  // Backing an unbacked page afterwards gives it real memory of its own.
  KVC_ASSERT_OK(Acquire(base + 5 * page_, page_));
  KVC_ASSERT_OK(Fill(base + 5 * page_, page_, 5));
  EXPECT_EQ(Val(Mismatches(base + 5 * page_, page_, 5)), 0U);
  for (std::uint64_t p = 0; p < kPages; p += 2) {
    EXPECT_EQ(Val(Mismatches(base + p * page_, page_, 7)), 0U) << "backed page " << p;
  }
  KVC_EXPECT_OK(rt_->DestroyRegion(base));
}

}  // namespace
}  // namespace kvcached::gputest
