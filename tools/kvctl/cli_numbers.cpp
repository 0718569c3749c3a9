#include "tools/kvctl/cli_numbers.h"

#include <fmt/core.h>

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace kvctl {
namespace {

// Digits with at most one '.', at least one digit: what a person types for a duration.
bool IsPlainDecimal(const std::string& text) {
  bool digit = false;
  bool dot = false;
  for (char c : text) {
    if (c >= '0' && c <= '9') {
      digit = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      return false;
    }
  }
  return digit;
}

}  // namespace

std::string FormatNumber(double value) {
  std::string text = fmt::format("{:.6f}", value);
  while (!text.empty() && text.back() == '0') text.pop_back();
  if (!text.empty() && text.back() == '.') text.pop_back();
  return text;
}

kvcached::Result<double> ParseSeconds(const std::string& option, const std::string& text, double lo,
                                      double hi) {
  const std::string range = FormatNumber(lo) + ".." + FormatNumber(hi);
  if (!IsPlainDecimal(text)) {
    return kvcached::Status(
        kvcached::Errc::kInvalid,
        fmt::format("{}: '{}' is not a number of seconds ({})", option, text, range));
  }
  const double value = std::strtod(text.c_str(), nullptr);
  if (!std::isfinite(value) || value < lo || value > hi) {
    return kvcached::Status(
        kvcached::Errc::kInvalid,
        fmt::format("{}: {} seconds is out of range ({})", option, text, range));
  }
  return value;
}

kvcached::Result<std::uint64_t> ParseCount(const std::string& option, const std::string& text,
                                           std::uint64_t lo, std::uint64_t hi) {
  const std::string range = fmt::format("{}..{}", lo, hi);
  std::uint64_t value = 0;
  const char* end = text.data() + text.size();
  const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (!digits) {
    return kvcached::Status(
        kvcached::Errc::kInvalid,
        fmt::format("{}: '{}' is not a whole number ({})", option, text, range));
  }
  if (ec != std::errc() || ptr != end || value < lo || value > hi) {
    return kvcached::Status(kvcached::Errc::kInvalid,
                            fmt::format("{}: {} is out of range ({})", option, text, range));
  }
  return value;
}

}  // namespace kvctl
