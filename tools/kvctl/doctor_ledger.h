// kvctl doctor's "ledger" checks: the segments this user's engines would attach to (each GPU's
// default name, KVCACHED_IPC_NAME), each diagnosed exactly as an engine would open it
// (ledger::DiagnoseSegment): a segment an engine would refuse (corrupt, empty, truncated,
// foreign-owned, world-writable, unreadable, full) is a failure, since the engine then runs with a
// process-local budget.
#pragma once

#include <string>
#include <vector>

#include "core/config/config.h"

namespace kvctl {

struct LedgerCheck {
  bool ok = true;
  std::string detail;
};

// The segments this user's engines would attach to: each visible GPU's default name, and every
// existing segment an engine of this user with this configuration could pick.
std::vector<std::string> EngineSegmentNames(const kvcached::Config& config);

// `only` (kvctl doctor --segment): diagnose these names instead of EngineSegmentNames.
std::vector<LedgerCheck> CheckEngineSegments(const kvcached::Config& config,
                                             const std::vector<std::string>& only = {});

}  // namespace kvctl
