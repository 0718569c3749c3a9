// FormatBytes (core/common): the one byte formatter of the shim's messages, the config errors
// and kvctl.
#include "core/common/format_bytes.h"

#include <gtest/gtest.h>

#include "core/config/config.h"

namespace kvcached {
namespace {

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = kKiB << 10;
constexpr std::uint64_t kGiB = kMiB << 10;

TEST(FormatBytes, ExactMultiplesHaveNoDecimalsOthersUpToTwo) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(4096), "4 KiB");
  EXPECT_EQ(FormatBytes(3 * kMiB), "3 MiB");
  EXPECT_EQ(FormatBytes(1536 * kMiB), "1.5 GiB");
  EXPECT_EQ(FormatBytes(kGiB + kGiB / 4), "1.25 GiB");
  EXPECT_EQ(FormatBytes(kGiB + 1), "1 GiB");  // rounds to two decimals
  EXPECT_EQ(FormatBytes(8 * kGiB - 1536 * kMiB), "6.5 GiB");
}

TEST(FormatBytes, LargeValuesUseTheLargeUnits) {
  EXPECT_EQ(FormatBytes(std::uint64_t{1} << 40), "1 TiB");
  EXPECT_EQ(FormatBytes(std::uint64_t{3} << 50), "3 PiB");
  EXPECT_EQ(FormatBytes(~std::uint64_t{0}), "16 EiB");
}

TEST(FormatBytes, JustBelowAUnitSaysTheNextUnitNot1024) {
  EXPECT_EQ(FormatBytes(kMiB - 1), "1 MiB");
  EXPECT_EQ(FormatBytes(kGiB - kKiB), "1 GiB");
  EXPECT_EQ(FormatBytes(kGiB - 11 * kMiB), "1013 MiB");
}

TEST(FormatBytes, ParseSizeReadsEveryOutputBackCloseToTheValue) {
  for (const std::uint64_t v : {std::uint64_t{4096}, 3 * kMiB, 1536 * kMiB, kGiB + kGiB / 4,
                                kMiB - 1, std::uint64_t{123456789}}) {
    const auto back = ParseSize(FormatBytes(v));
    ASSERT_TRUE(back.has_value()) << FormatBytes(v);
    EXPECT_LE(*back > v ? *back - v : v - *back, v / 100) << FormatBytes(v);
  }
}

}  // namespace
}  // namespace kvcached
