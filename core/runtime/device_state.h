// DeviceState: what the runtime keeps per GPU once that GPU is first used: its identity, the
// retained primary context, the budget and the page pool.
#pragma once

#include <cuda.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "core/budget/budget.h"
#include "core/common/status.h"
#include "core/config/config.h"
#include "core/driver/context.h"
#include "core/driver/driver.h"
#include "core/pool/page_pool.h"
#include "core/runtime/runtime.h"

namespace kvcached {

struct DeviceState {
  DeviceIdentity identity;
  CUdevice device = 0;
  driver::PrimaryContext ctx;      // declaration order = reverse destruction order:
  std::unique_ptr<Budget> budget;  // the pool goes first, then the budget, then the context
  std::unique_ptr<PagePool> pool;

  // cuDeviceGet, VMM support, granularity vs page size, UUID, total memory, primary context,
  // budget (from `factory`, or the default LocalBudget) and pool. Starts no thread.
  static Result<std::unique_ptr<DeviceState>> Create(const driver::Driver& driver,
                                                     const Config& config, int ordinal,
                                                     const BudgetFactory& factory,
                                                     const std::string& label);
};

// The default budget: KVCACHED_BUDGET if set, else KVCACHED_GPU_UTILIZATION x total memory.
Result<std::unique_ptr<Budget>> DefaultBudget(const Config& config, const DeviceIdentity& id);
// "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi prints it.
std::string FormatGpuUuid(const CUuuid& uuid);

}  // namespace kvcached
