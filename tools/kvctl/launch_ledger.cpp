#include "tools/kvctl/launch_ledger.h"

#include <dirent.h>
#include <fmt/core.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <set>

#include "core/ledger/ledger_layout.h"
#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_slots.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"
#include "tools/kvctl/launch_child.h"
#include "tools/kvctl/limit_value.h"

namespace kvctl {

namespace ledger = kvcached::ledger;

namespace {

// Every pid under one of `roots` (the roots included), from one pass over /proc.
std::set<pid_t> TreePids(const std::vector<pid_t>& roots) {
  std::set<pid_t> out;
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir("/proc"), ::closedir);
  if (!dir) return out;
  while (const dirent* d = ::readdir(dir.get())) {
    const auto pid = static_cast<pid_t>(std::atol(static_cast<const char*>(d->d_name)));
    if (pid <= 0) continue;
    for (pid_t root : roots) {
      if (root > 0 && InProcessTree(pid, root)) {
        out.insert(pid);
        break;
      }
    }
  }
  return out;
}

// Names of the ledger segments `pid` has mapped.
void MappedSegments(pid_t pid, std::set<std::string>& names) {
  std::ifstream maps(fmt::format("/proc/{}/maps", pid));
  const std::string dir = std::string(ledger::kShmDir) + "/";
  std::string line;
  while (std::getline(maps, line)) {
    const auto at = line.find(dir);
    if (at == std::string::npos) continue;
    const std::string name = line.substr(at + dir.size());
    if (ledger::IsSegmentName(name)) names.insert(name);  // " (deleted)" ones are not
  }
}

}  // namespace

LedgerScan LedgerScan::Take(const std::vector<pid_t>& roots) {
  LedgerScan scan;
  const std::set<pid_t> pids = TreePids(roots);
  std::set<std::string> names;
  for (pid_t pid : pids) MappedSegments(pid, names);
  for (const auto& name : names) {
    const SegmentEntry entry = Inspect(name);
    if (!entry.snapshot) continue;
    for (const auto& slot : entry.snapshot->slots) {
      // Pids of another namespace are not ours to look up; dead slots hold nothing of ours.
      if (slot.dead || slot.other_pidns || !pids.contains(static_cast<pid_t>(slot.pid))) continue;
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
