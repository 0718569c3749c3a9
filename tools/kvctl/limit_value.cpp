#include "tools/kvctl/limit_value.h"

#include <fmt/core.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

#include "core/config/config.h"
#include "core/ledger/ledger_layout.h"

namespace kvctl {
namespace {

kvcached::Status Bad(const std::string& text, const std::string& why) {
  return {kvcached::Errc::kInvalid,
          fmt::format("bad size '{}': {}. Use bytes (8G, 512MiB, 4096), a fraction of the budget "
                      "(0.5 or 50%) or none",
                      text, why)};
}

std::optional<double> ParseNumber(const std::string& text) {
  if (text.empty()) return std::nullopt;
  for (char c : text) {
    if (std::isdigit(static_cast<unsigned char>(c)) == 0 && c != '.') return std::nullopt;
  }
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

}  // namespace

std::uint64_t LimitValue::Resolve(std::uint64_t budget) const {
  if (none) return kvcached::ledger::kNoLimit;
  if (relative) {
    return static_cast<std::uint64_t>(std::floor(fraction * static_cast<double>(budget)));
  }
  return bytes;
}

kvcached::Result<LimitValue> ParseLimitValue(const std::string& raw) {
  std::string text = raw;
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  LimitValue v;
  if (text == "none" || text == "unlimited" || text == "off") {
    v.none = true;
    return v;
  }
  if (!text.empty() && text.back() == '%') {
    const auto pct = ParseNumber(text.substr(0, text.size() - 1));
    if (!pct || *pct > 100) return Bad(raw, "a percentage must be within 0%..100%");
    v.relative = true;
    v.fraction = *pct / 100.0;
    return v;
  }
  if (text.find('.') != std::string::npos && ParseNumber(text)) {
    const double f = *ParseNumber(text);
    if (f > 1.0) return Bad(raw, "a number with a decimal point is a fraction of the budget, 0..1");
    v.relative = true;
    v.fraction = f;
    return v;
  }
  const auto bytes = kvcached::ParseSize(raw);
  if (!bytes) return Bad(raw, "not a size");
  // 2^64-1 is how the ledger spells "no limit": a number must never mean that by accident.
  if (*bytes > kMaxLimitBytes) {
    return Bad(raw,
               "out of range (at most 1 EiB; any limit above the budget is clamped to it). To "
               "remove a limit, use none or unlimited");
  }
  v.bytes = *bytes;
  return v;
}

}  // namespace kvctl
