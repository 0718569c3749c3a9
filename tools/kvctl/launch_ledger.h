// What the launcher reads and writes in the ledger for the engines it started: the processes of
// an engine (its pid and descendants) attached to any GPU's segment, their memory, and the
// engine's `limit:` applied to each of them as it attaches.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/common/status.h"
#include "core/ledger/ledger_snapshot.h"

namespace kvctl {

struct AttachedProcess {
  std::string segment;
  std::uint64_t budget = 0;
  kvcached::ledger::SlotSnapshot slot;
};

// One read of the segments the processes of some trees have mapped: their live slots. Only
// those segments are opened (found in /proc/PID/maps), so that a half-created or foreign
// segment elsewhere in /dev/shm never delays the launcher.
class LedgerScan {
 public:
  static LedgerScan Take(const std::vector<pid_t>& roots);
  // The slots of processes in the tree rooted at `root`.
  [[nodiscard]] std::vector<AttachedProcess> Of(pid_t root) const;

 private:
  std::vector<AttachedProcess> all_;
};

// Sets `limit` (a `kvctl limit` SIZE) on the process if its stored limit differs. Returns a
// line for the log when it changed something, "" when it was already set.
kvcached::Result<std::string> EnforceLimit(const AttachedProcess& process,
                                           const std::string& limit);

}  // namespace kvctl
