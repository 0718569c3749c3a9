// Data integrity of lazy regions on the fake driver (device pointers are host addresses there):
// stray writes to unbacked pages land in the shared zero page, and backed pages keep their
// bytes while every other page is swapped in and out.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "tests/unit/runtime_test_fixture.h"

namespace kvcached {
namespace {

using namespace kvcached::testing;  // NOLINT(google-build-using-namespace)

unsigned char* At(std::uint64_t addr) {
  return reinterpret_cast<unsigned char*>(addr);
}

std::uint64_t Checksum(std::uint64_t addr, std::uint64_t len) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a over 8-byte words
  const auto* p = reinterpret_cast<const std::uint64_t*>(addr);
  for (std::uint64_t i = 0; i < len / 8; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

void FillRandom(std::uint64_t addr, std::uint64_t len, std::mt19937_64& rng) {
  auto* p = reinterpret_cast<std::uint64_t*>(addr);
  for (std::uint64_t i = 0; i < len / 8; ++i) p[i] = rng();
}

using IntegrityTest = LeakCheckedRuntimeTest;

TEST_F(IntegrityTest, WritesToUnbackedPagesLandInTheZeroPageNeverInABackedPage) {
  t_ = MakeRuntime(QuietConfig());
  Runtime& rt = *t_.rt;
  std::uint64_t base = rt.CreateRegion(0, 4 * kPage, RegionKind::kLazy).value();
  std::uint64_t other = rt.CreateRegion(0, 2 * kPage, RegionKind::kLazy).value();
  // The zero page starts cleared.
  for (std::uint64_t off = 0; off < kPage; off += 4096) ASSERT_EQ(At(base + off)[7], 0);

  ASSERT_TRUE(AcquireOne(rt, base + kPage, kPage).ok());
  std::memset(At(base + kPage), 0xA5, kPage);

  At(base + 2 * kPage)[100] = 0xEE;  // stray write into an unbacked page
  // Every unbacked page of every region aliases the same zero page...
  EXPECT_EQ(At(base + 3 * kPage)[100], 0xEE);
  EXPECT_EQ(At(base)[100], 0xEE);
  EXPECT_EQ(At(other + kPage)[100], 0xEE);
  // ...and the backed page is untouched.
  EXPECT_EQ(At(base + kPage)[100], 0xA5);
  EXPECT_EQ(
      Checksum(base + kPage, kPage),
      Checksum(reinterpret_cast<std::uint64_t>(std::vector<unsigned char>(kPage, 0xA5).data()),
               kPage));

  // A write to the backed page does not show through the aliases.
  At(base + kPage)[200] = 0x11;
  EXPECT_EQ(At(base + 2 * kPage)[200], 0);

  // Trimmed back to ZERO, the page shows the zero page again; backed again, it is its own.
  ASSERT_TRUE(ReleaseOne(rt, base + kPage, kPage).ok());
  ASSERT_TRUE(rt.Trim(0).ok());
  EXPECT_EQ(StateOf(rt, base + kPage), PageState::kZero);
  EXPECT_EQ(At(base + kPage)[100], 0xEE);
  ASSERT_TRUE(AcquireOne(rt, base + kPage, 1).ok());
  At(base + kPage)[100] = 0x33;
  EXPECT_EQ(At(base + 2 * kPage)[100], 0xEE);
}

// A backed page keeps its bytes across 1e5 random acquire / release / trim cycles of the other
// pages, with the background thread mapping ahead and trimming at the same time. Every held
// block carries a signature that is checked when it is released.
class IntegrityCycles : public IntegrityTest, public ::testing::WithParamInterface<std::size_t> {
 protected:
  // The zero alias size under test: one page, or chunks of up to 4 pages (the default).
  Config CycleConfig() const {
    Config c = QuietConfig();
    c.zero_chunk_mb = GetParam();
    return c;
  }
};

INSTANTIATE_TEST_SUITE_P(ZeroChunkMb, IntegrityCycles, ::testing::Values(2U, 8U));

TEST_P(IntegrityCycles, BackedPagesKeepTheirBytesAcrossRandomCyclesOfOtherPages) {
  Config c = CycleConfig();
  c.map_ahead_pages = 2;
  c.trim_delay_ms = 0;
  c.page_prealloc = true;
  c.min_reserved_pages = 2;
  c.max_reserved_pages = 4;
  t_ = MakeRuntime(c);
  Runtime& rt = *t_.rt;
  constexpr std::uint64_t kPages = 16;
  constexpr std::uint64_t kBlock = kPage / 4;
  constexpr std::uint64_t kBlocks = (kPages - 1) * 4;  // page 0 is the guarded page
  std::uint64_t base = rt.CreateRegion(0, kPages * kPage, RegionKind::kLazy).value();

  std::mt19937_64 rng(12345);
  ASSERT_TRUE(AcquireOne(rt, base, kPage).ok());
  FillRandom(base, kPage, rng);
  const std::uint64_t guarded = Checksum(base, kPage);

  std::vector<std::uint64_t> sig(kBlocks, 0);  // 0 = not held
  std::vector<std::uint64_t> held;
  auto addr_of = [&](std::uint64_t b) { return base + kPage + b * kBlock; };
  int bad_signatures = 0;
  int failed_calls = 0;
  for (int op = 0; op < 100000; ++op) {
    bool acquire = held.empty() || (held.size() < 8 && (rng() & 1U) != 0);
    if (acquire) {
      std::uint64_t b = rng() % kBlocks;
      if (sig[b] != 0) continue;
      // Blocks are acquired in pieces so that pages hold several references.
      if (!AcquireOne(rt, addr_of(b), kBlock / 2).ok() ||
          !AcquireOne(rt, addr_of(b) + kBlock / 2, kBlock / 2).ok()) {
        ++failed_calls;
        continue;
      }
      sig[b] = rng() | 1U;
      *reinterpret_cast<std::uint64_t*>(addr_of(b)) = sig[b];
      *reinterpret_cast<std::uint64_t*>(addr_of(b) + kBlock - 8) = ~sig[b];
      held.push_back(b);
    } else {
      std::size_t i = rng() % held.size();
      std::uint64_t b = held[i];
      if (*reinterpret_cast<std::uint64_t*>(addr_of(b)) != sig[b] ||
          *reinterpret_cast<std::uint64_t*>(addr_of(b) + kBlock - 8) != ~sig[b]) {
        ++bad_signatures;
      }
      if (!ReleaseOne(rt, addr_of(b), kBlock / 2).ok() ||
          !ReleaseOne(rt, addr_of(b) + kBlock / 2, kBlock / 2).ok()) {
        ++failed_calls;
      }
      sig[b] = 0;
      held[i] = held.back();
      held.pop_back();
    }
    if (op % 100 == 99) {
      if (!rt.Trim(0).ok()) ++failed_calls;
    }
    if (op % 10000 == 9999) ASSERT_EQ(Checksum(base, kPage), guarded) << "at op " << op;
  }
  EXPECT_EQ(bad_signatures, 0);
  EXPECT_EQ(failed_calls, 0);
  EXPECT_EQ(Checksum(base, kPage), guarded);
  DeviceStats s = StatsOf(rt);
  // The test must really have cycled pages, in the foreground and in the background.
  EXPECT_GT(s.maps, 10000U);
  EXPECT_GT(s.unmaps, 10000U);
  EXPECT_LT(s.sync_maps, s.maps);
  for (std::uint64_t b : held) {
    ASSERT_TRUE(ReleaseOne(rt, addr_of(b), kBlock / 2).ok());
    ASSERT_TRUE(ReleaseOne(rt, addr_of(b) + kBlock / 2, kBlock / 2).ok());
  }
  EXPECT_EQ(StateOf(rt, base), PageState::kInUse);
  auto info = rt.Info(base).value();
  EXPECT_EQ(info.in_use_pages, 1U);  // every reference was returned
}

// Stray writes into unbacked pages while other pages cycle: never visible in backed pages.
TEST_P(IntegrityCycles, StrayWritesDuringCyclesNeverReachBackedPages) {
  Config c = CycleConfig();
  c.trim_delay_ms = 0;  // the worker trims; nothing maps ahead, so ZERO pages stay ZERO
  t_ = MakeRuntime(c);
  Runtime& rt = *t_.rt;
  constexpr std::uint64_t kPages = 8;
  std::uint64_t base = rt.CreateRegion(0, kPages * kPage, RegionKind::kLazy).value();
  std::mt19937_64 rng(777);
  ASSERT_TRUE(AcquireOne(rt, base, kPage).ok());
  FillRandom(base, kPage, rng);
  const std::uint64_t guarded = Checksum(base, kPage);
  std::vector<std::uint64_t> value(kPages, 0);  // 0 = page not held by the test
  int bad = 0;
  for (int op = 0; op < 20000; ++op) {
    std::uint64_t p = 1 + rng() % (kPages - 1);
    std::uint64_t addr = base + p * kPage;
    if (value[p] == 0) {
      ASSERT_TRUE(AcquireOne(rt, addr, kPage).ok());
      value[p] = rng() | 1U;
      *reinterpret_cast<std::uint64_t*>(addr + 64) = value[p];
    } else {
      bad += *reinterpret_cast<std::uint64_t*>(addr + 64) != value[p] ? 1 : 0;
      ASSERT_TRUE(ReleaseOne(rt, addr, kPage).ok());
      value[p] = 0;
    }
    // Scribble over the same offset of a page the test does not hold, if it is unbacked.
    std::uint64_t q = 1 + rng() % (kPages - 1);
    if (value[q] == 0 && StateOf(rt, base + q * kPage) == PageState::kZero) {
      *reinterpret_cast<std::uint64_t*>(base + q * kPage + 64) = rng();
    }
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(Checksum(base, kPage), guarded);
}

}  // namespace
}  // namespace kvcached
