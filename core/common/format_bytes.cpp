#include "core/common/format_bytes.h"

#include <fmt/format.h>

#include <array>
#include <cmath>

namespace kvcached {

std::string FormatBytes(std::uint64_t bytes) {
  static constexpr std::array<const char*, 7> kUnits = {"B",   "KiB", "MiB", "GiB",
                                                        "TiB", "PiB", "EiB"};
  std::size_t unit = 0;
  while (unit + 1 < kUnits.size() && bytes >= (std::uint64_t{1} << (10 * (unit + 1)))) ++unit;
  if (unit == 0) return fmt::format("{} B", bytes);
  const std::uint64_t scale = std::uint64_t{1} << (10 * unit);
  if (bytes % scale == 0) return fmt::format("{} {}", bytes / scale, kUnits.at(unit));
  double value = static_cast<double>(bytes) / static_cast<double>(scale);
  // Just below the next unit, two decimals would round up to "1024 KiB": say "1 MiB" instead.
  if (std::round(value * 100.0) >= 1024.0 * 100.0 && unit + 1 < kUnits.size()) {
    ++unit;
    value /= 1024.0;
  }
  // Whole numbers print without decimals ("2 MiB"), others with up to two ("1.5 GiB").
  std::string text = fmt::format("{:.2f}", value);
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  return text + " " + kUnits.at(unit);
}

}  // namespace kvcached
