#include "core/config/device_budget.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/common/format_bytes.h"

namespace kvcached {

std::uint64_t MinimumBudgetBytes(const Config& config) {
  const std::uint64_t reserve = config.page_prealloc ? config.min_reserved_pages : 0;
  return config.page_size() * (reserve + kMinWorkingPages);
}

std::string BudgetTooSmall(const Config& config, std::uint64_t budget) {
  const std::uint64_t minimum = MinimumBudgetBytes(config);
  if (budget >= minimum) return {};
  return fmt::format(
      "below the minimum of {} ({} reserve pool pages (KVCACHED_MIN_RESERVED_PAGES) + {} working "
      "pages of {}); every allocation would wait for pages that never come",
      FormatBytes(minimum), config.page_prealloc ? config.min_reserved_pages : 0, kMinWorkingPages,
      FormatBytes(config.page_size()));
}

Result<DeviceBudget> BudgetForDevice(const Config& config, std::uint64_t gpu_total_bytes,
                                     int ordinal) {
  if (gpu_total_bytes == 0) {
    return Status(Errc::kInvalid,
                  fmt::format("GPU {} reports 0 bytes of memory: no budget possible", ordinal));
  }
  DeviceBudget out;
  if (config.budget_bytes) {
    out.bytes = std::min(*config.budget_bytes, gpu_total_bytes);
    if (*config.budget_bytes > gpu_total_bytes) {
      out.warning = fmt::format(
          "KVCACHED_BUDGET={} is more than GPU {}'s {}: the budget is the whole GPU ({}); set "
          "KVCACHED_BUDGET to at most {} (or unset it and use KVCACHED_GPU_UTILIZATION)",
          FormatBytes(*config.budget_bytes), ordinal, FormatBytes(gpu_total_bytes),
          FormatBytes(out.bytes), FormatBytes(gpu_total_bytes));
    }
  } else {
    out.bytes = static_cast<std::uint64_t>(
        std::floor(config.gpu_utilization * static_cast<double>(gpu_total_bytes)));
    out.bytes = std::min(out.bytes, gpu_total_bytes);
  }
  if (const std::string why = BudgetTooSmall(config, out.bytes); !why.empty()) {
    const std::string source =
        config.budget_bytes ? fmt::format("KVCACHED_BUDGET={}", FormatBytes(*config.budget_bytes))
                            : fmt::format("KVCACHED_GPU_UTILIZATION={}", config.gpu_utilization);
    return Status(Errc::kInvalid,
                  fmt::format("{} gives GPU {} ({}) a budget of {}, {}. Raise it", source, ordinal,
                              FormatBytes(gpu_total_bytes), FormatBytes(out.bytes), why));
  }
  return out;
}

}  // namespace kvcached
