// How the shim attaches each GPU's budget to the shared ledger:
//   Runtime::Create(config, lookup, kvcached::ledger::MakeBudgetFactory())
// On a segment that cannot be used (corrupt, empty, truncated, foreign-owned, world-writable,
// permission denied, full) the factory says so once, loudly (the segment, the reason, the fix),
// and returns a process-local budget: the engine keeps its KV cache, without sharing the GPU's
// budget elastically. Only a configuration that gives no budget at all is an error.
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

// The segment name an engine with `config` uses on `device`: KVCACHED_IPC_NAME when set; else
// "kvcached_gpu_<uuid>" when KVCACHED_SHM_GROUP says the segment is shared on purpose; else the
// per-user "kvcached_u<euid>_gpu_<uuid>" (docs/ledger.md "Trust model").
std::string DefaultSegmentName(const Config& config, const DeviceIdentity& device);

// What an engine of this user with KVCACHED_SHM_GROUP=`trusted_group` would find at
// /dev/shm/<name>: Ok when it would attach to it (or create it: it does not exist yet), else
// the problem and its fix (the engine would then run with a process-local budget). Read-only in
// effect: it opens the file but writes nothing. For `kvctl doctor`.
Status DiagnoseSegment(const std::string& name, const std::string& trusted_group);

}  // namespace kvcached::ledger
