// How the shim attaches each GPU's budget to the shared ledger:
//   Runtime::Create(config, lookup, kvcached::ledger::MakeBudgetFactory())
// On a segment that cannot be used (corrupt, foreign, permission denied, full) the factory
// returns an error naming /dev/shm/NAME and the fix; the runtime then keeps that device without
// shared elasticity and says so.
#pragma once

#include <cstdint>
#include <memory>

#include "core/budget/budget_factory.h"
#include "core/common/status.h"
#include "core/config/config.h"
#include "core/ledger/ledger_segment.h"

namespace kvcached::ledger {

BudgetFactory MakeBudgetFactory();

// The GPU budget `config` asks for on a device of `total_bytes`: KVCACHED_BUDGET (at most the
// total) or KVCACHED_GPU_UTILIZATION x total. Only the segment's creator applies it.
Result<std::uint64_t> BudgetBytesFor(const Config& config, std::uint64_t total_bytes);

// Opens or creates the segment of `device` (exposed for tests and tools).
Result<std::shared_ptr<Segment>> OpenSegmentFor(const Config& config, const DeviceIdentity& device);

}  // namespace kvcached::ledger
