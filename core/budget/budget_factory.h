// How the Runtime gets one Budget per GPU: the factory it is given (the shared ledger's, or a
// test's), called with the identity of the GPU on its first use.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/budget/budget.h"
#include "core/common/status.h"
#include "core/config/config.h"

namespace kvcached {

// What a budget needs to know of the GPU it governs.
struct DeviceIdentity {
  int ordinal = 0;
  std::string uuid;  // "GPU-xxxxxxxx-xxxx-..." as nvidia-smi prints it
  std::uint64_t total_bytes = 0;
};

// Creates the budget for one device; without one, the Runtime makes a LocalBudget of
// gpu_utilization x total (or KVCACHED_BUDGET).
using BudgetFactory =
    std::function<Result<std::unique_ptr<Budget>>(const Config&, const DeviceIdentity&)>;

}  // namespace kvcached
