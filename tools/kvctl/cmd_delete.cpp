// kvctl delete NAME: removes a segment, refusing while live processes are attached.
#include <fmt/core.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_remove.h"
#include "core/ledger/ledger_segment.h"
#include "tools/kvctl/commands.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"

namespace kvctl {
namespace {

namespace ledger = kvcached::ledger;

int RunDelete(const std::string& input, bool force) {
  auto name = ledger::NormalizeSegmentName(input);
  if (!name.ok()) {
    PrintError(name.status().message());
    return kExitUsage;
  }
  const std::string path = ledger::SegmentPath(name.value());
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    PrintError(errno == ENOENT ? fmt::format("no segment {} (see `kvctl list`)", path)
                               : fmt::format("cannot read {}: {}", path, std::strerror(errno)));
    return kExitFailure;
  }
  if (force) {
    const SegmentEntry e = Inspect(name.value());
    kvcached::Status removed = ledger::Segment::Remove(name.value());
    if (!removed.ok()) {
      PrintError(removed.message());
      return kExitFailure;
    }
    std::string how;
    if (e.status == SegmentStatus::kCorrupt) {
      how = " (it was corrupt)";
    } else if (e.snapshot && e.snapshot->live > 0) {
      how = fmt::format(" (forced: {} live process(es) still have it mapped)", e.snapshot->live);
    }
    std::cout << "deleted " << path << how << '\n';
    return kExitOk;
  }
  // The check and the unlink happen under the segment's lock, so that no engine attaches in
  // between (it would keep a budget nobody else sees).
  auto outcome = ledger::RemoveUnlessInUse(name.value());
  if (!outcome.ok()) {
    PrintError(outcome.status().message());
    return kExitFailure;
  }
  const auto& o = outcome.value();
  if (!o.removed) {
    std::string pids;
    for (const auto& s : o.live) {
      if (!pids.empty()) pids += ", ";
      pids += std::to_string(s.pid);
      if (!s.label.empty()) pids += " (" + Printable(s.label) + ")";
    }
    PrintError(fmt::format(
        "{} is in use by {} live process(es): {}. Stop them first, or use --force (they keep "
        "their mapping, but engines started afterwards would share a new budget and the GPU "
        "could be over-committed)",
        path, o.live.size(), pids));
    return kExitFailure;
  }
  std::cout << "deleted " << path << (o.corrupt.empty() ? "" : " (it was corrupt)") << '\n';
  return kExitOk;
}

}  // namespace

void AddDeleteCommand(CLI::App& app, int& exit_code) {
  auto name = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand(
      "delete",
      "Remove a segment (refused while live processes are attached, unless --force). "
      "Only kvcached_* segments in /dev/shm can be removed");
  cmd->add_option("NAME", *name, "NAME, kvcached_NAME or /dev/shm/kvcached_NAME")->required();
  cmd->add_flag("--force", *force, "Remove it even though live processes are attached");
  cmd->callback([name, force, &exit_code] { exit_code = RunDelete(*name, *force); });
}

}  // namespace kvctl
