#include "core/config/device_budget.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace kvcached {

std::string FormatConfigBytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int unit = 0;
  while (unit < 6 && bytes >= (std::uint64_t{1} << (10 * (unit + 1)))) ++unit;
  if (unit == 0) return fmt::format("{} B", bytes);
  const std::uint64_t scale = std::uint64_t{1} << (10 * unit);
  if (bytes % scale == 0) return fmt::format("{} {}", bytes / scale, kUnits[unit]);
  return fmt::format("{:.2f} {}", static_cast<double>(bytes) / static_cast<double>(scale),
                     kUnits[unit]);
}

std::uint64_t MinimumBudgetBytes(const Config& config) {
  const std::uint64_t reserve = config.page_prealloc ? config.min_reserved_pages : 0;
  return config.zero_memory_bytes() + config.page_size() * (reserve + kMinWorkingPages);
}

std::string BudgetTooSmall(const Config& config, std::uint64_t budget) {
  const std::uint64_t minimum = MinimumBudgetBytes(config);
  if (budget >= minimum) return {};
  return fmt::format(
      "below the minimum of {} (zero memory {} + {} reserve pool pages "
      "(KVCACHED_MIN_RESERVED_PAGES) + {} working pages of {}); every allocation would wait for "
      "pages that never come",
      FormatConfigBytes(minimum), FormatConfigBytes(config.zero_memory_bytes()),
      config.page_prealloc ? config.min_reserved_pages : 0, kMinWorkingPages,
      FormatConfigBytes(config.page_size()));
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
          FormatConfigBytes(*config.budget_bytes), ordinal, FormatConfigBytes(gpu_total_bytes),
          FormatConfigBytes(out.bytes), FormatConfigBytes(gpu_total_bytes));
    }
  } else {
    out.bytes = static_cast<std::uint64_t>(
        std::floor(config.gpu_utilization * static_cast<double>(gpu_total_bytes)));
    out.bytes = std::min(out.bytes, gpu_total_bytes);
  }
  if (const std::string why = BudgetTooSmall(config, out.bytes); !why.empty()) {
    const std::string source =
        config.budget_bytes
            ? fmt::format("KVCACHED_BUDGET={}", FormatConfigBytes(*config.budget_bytes))
            : fmt::format("KVCACHED_GPU_UTILIZATION={}", config.gpu_utilization);
    return Status(Errc::kInvalid, fmt::format("{} gives GPU {} ({}) a budget of {}, {}. Raise it",
                                              source, ordinal, FormatConfigBytes(gpu_total_bytes),
                                              FormatConfigBytes(out.bytes), why));
  }
  return out;
}

}  // namespace kvcached
