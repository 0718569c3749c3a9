// Removing a segment safely (`kvctl delete` without --force): "is anybody attached?" and the
// unlink happen under the segment's exclusive lock, which every engine takes shared while it
// claims its slot (LedgerBudget::Attach): an engine either shows up in the check, or finds the
// segment deleted and opens (creates) the name again. Never both attached and deleted.
#pragma once

#include <string>
#include <vector>

#include "core/common/status.h"
#include "core/ledger/ledger_snapshot.h"

namespace kvcached::ledger {

struct RemoveOutcome {
  bool removed = false;
  std::vector<SlotSnapshot> live;  // when not removed: the live processes attached
  std::string corrupt;             // when removed: why it was unusable (empty when it was fine)
};

// Removes /dev/shm/<name> unless live processes are attached to it (then `live` lists them and
// nothing is removed). A corrupt segment or something that is not a regular file is removed.
Result<RemoveOutcome> RemoveUnlessInUse(const std::string& name);

}  // namespace kvcached::ledger
