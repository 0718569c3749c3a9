// The SIZE argument of `kvctl limit`: bytes ("8G", "512MiB", "4096"), a fraction of the budget
// ("0.5", "50%") or "none".
#pragma once

#include <cstdint>
#include <string>

#include "core/common/status.h"

namespace kvctl {

struct LimitValue {
  bool none = false;      // remove the limit
  bool relative = false;  // `fraction` of the segment's budget
  double fraction = 0;
  std::uint64_t bytes = 0;  // when !none && !relative

  // The limit to store for a segment with `budget` bytes (before clamping), or kNoLimit.
  [[nodiscard]] std::uint64_t Resolve(std::uint64_t budget) const;
};

// The largest byte count accepted (1 EiB): more than any GPU, far below the "no limit" word.
inline constexpr std::uint64_t kMaxLimitBytes = std::uint64_t{1} << 60;

kvcached::Result<LimitValue> ParseLimitValue(const std::string& raw);

}  // namespace kvctl
