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

kvcached::Result<LimitValue> ParseLimitValue(const std::string& raw);

}  // namespace kvctl
