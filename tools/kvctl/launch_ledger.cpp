#include "tools/kvctl/launch_ledger.h"

#include <fmt/core.h>

#include <algorithm>

#include "core/ledger/ledger_layout.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_slots.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"
#include "tools/kvctl/launch_child.h"
#include "tools/kvctl/limit_value.h"

namespace kvctl {

namespace ledger = kvcached::ledger;

LedgerScan LedgerScan::Take() {
  LedgerScan scan;
  for (auto& entry : InspectAll()) {
    if (!entry.snapshot) continue;
    for (const auto& slot : entry.snapshot->slots) {
      // Pids of another namespace are not ours to look up; dead slots hold nothing of ours.
      if (slot.dead || slot.other_pidns || slot.pid == 0) continue;
      scan.all_.push_back({entry.name, entry.snapshot->budget, slot});
    }
  }
  return scan;
}

std::vector<AttachedProcess> LedgerScan::Of(pid_t root) const {
  std::vector<AttachedProcess> out;
  if (root <= 0) return out;
  for (const auto& p : all_) {
    if (InProcessTree(static_cast<pid_t>(p.slot.pid), root)) out.push_back(p);
  }
  return out;
}

kvcached::Result<std::string> EnforceLimit(const AttachedProcess& process,
                                           const std::string& limit) {
  auto value = ParseLimitValue(limit);  // validated when the file was read
  if (!value.ok()) return value.status();
  const std::uint64_t wanted = value.value().Resolve(process.budget);
  const std::uint64_t stored =
      wanted == ledger::kNoLimit ? wanted : std::min(wanted, process.budget);
  if (process.slot.limit == stored) return std::string();
  auto segment = ledger::Segment::Open(process.segment, ledger::Segment::Access::kReadWrite);
  if (!segment.ok()) return segment.status();
  auto set =
      ledger::SetSlotLimit(*segment.value(), process.slot.index, process.slot.owner_word, wanted);
  if (!set.ok()) return set.status();
  return fmt::format("limit {} set on pid {} ({})", FormatLimit(set.value()), process.slot.pid,
                     process.segment);
}

}  // namespace kvctl
