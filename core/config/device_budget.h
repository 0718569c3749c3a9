// The budget checks that need the GPU's size: the same function is used by the engine at start
// (DeviceState::Create) and by `kvctl doctor`, so the two cannot disagree.
#pragma once

#include <cstdint>
#include <string>

#include "core/common/status.h"
#include "core/config/config.h"

namespace kvcached {

// Fewest pages a budget must leave for the engine's own pages, beside its reserve pool: below this
// every process waits for pages it can never get.
inline constexpr std::uint64_t kMinWorkingPages = 4;

// The smallest budget one engine can work with: the reserve pool it refills to
// (KVCACHED_MIN_RESERVED_PAGES, when KVCACHED_PAGE_PREALLOC_ENABLED) and kMinWorkingPages pages
// (its zero memory is outside the budget). Budgets below it are refused.
std::uint64_t MinimumBudgetBytes(const Config& config);

// Why `budget` bytes are too small ("below the minimum of 18 MiB (5 reserve pool pages ...)"),
// or empty when they are enough. LoadConfig refuses a small KVCACHED_BUDGET with it (no GPU
// needed).
std::string BudgetTooSmall(const Config& config, std::uint64_t budget);

struct DeviceBudget {
  std::uint64_t bytes = 0;  // the budget this GPU gets
  std::string warning;      // non-empty: say it once (e.g. KVCACHED_BUDGET above the GPU's size)
};

// The budget for a GPU of `gpu_total_bytes`: KVCACHED_BUDGET clamped to the GPU (with a warning
// naming both), or KVCACHED_GPU_UTILIZATION x total. Refused, with one line naming the variable and
// the minimum, when that is below MinimumBudgetBytes (e.g. a utilization that rounds to 0 bytes).
Result<DeviceBudget> BudgetForDevice(const Config& config, std::uint64_t gpu_total_bytes,
                                     int ordinal);

}  // namespace kvcached
