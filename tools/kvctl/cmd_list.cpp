// kvctl list: every segment with its GPU, budget, use and processes.
#include <fmt/core.h>

#include <iostream>

#include "tools/kvctl/commands.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"

namespace kvctl {
namespace {

std::string ShortUuid(const std::string& uuid) {
  return uuid.size() > 12 ? uuid.substr(0, 12) + "..." : uuid;
}

int RunList(bool json) {
  const std::vector<SegmentEntry> entries = InspectAll();
  if (json) {
    nlohmann::json out;
    out["segments"] = nlohmann::json::array();
    for (const auto& e : entries) out["segments"].push_back(SegmentJson(e, true));
    std::cout << Dump(out) << '\n';
    return kExitOk;
  }
  if (entries.empty()) {
    std::cout << "no kvcached segments in /dev/shm (engines create one per GPU on first use)\n";
    return kExitOk;
  }
  Table table({"NAME", "GPU", "BUDGET", "USED", "RESERVED", "FREE", "PROCS", "STATUS"},
              {false, false, true, true, true, true, true, false});
  std::vector<std::string> notes;
  for (const auto& e : entries) {
    if (!e.snapshot) {
      table.AddRow({Printable(e.name), "-", "-", "-", "-", "-", "-", StatusName(e.status)});
      notes.push_back(e.error);
      continue;
    }
    const auto& s = *e.snapshot;
    std::string procs = std::to_string(s.live);
    if (s.dead > 0) procs += fmt::format(" (+{} dead)", s.dead);
    std::string status = StatusName(e.status);
    if (e.status == SegmentStatus::kOk && s.live == 0 && s.dead == 0) status = "idle";
    if (e.status == SegmentStatus::kStale) {
      notes.push_back(
          fmt::format("{}: every attached process is dead; engines reclaim its slots "
                      "on their own, or remove it with `kvctl delete {}`",
                      e.name, e.name));
    }
    table.AddRow({Printable(e.name), Printable(ShortUuid(s.gpu_uuid)), FormatBytes(s.budget),
                  FormatBytes(s.in_use), FormatBytes(s.reserved),
                  FormatBytes(s.budget > s.charged ? s.budget - s.charged : 0), procs, status});
  }
  table.Print(std::cout);
  for (const auto& n : notes) std::cout << "\n" << Printable(n) << '\n';
  return kExitOk;
}

}  // namespace

void AddListCommand(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "list",
      "List every kvcached segment in /dev/shm: GPU, budget, used (in use), reserved, "
      "free, live processes; stale and corrupt segments are shown as such");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "Print JSON (segments with their processes) for scripts");
  cmd->callback([json, &exit_code] { exit_code = RunList(*json); });
}

}  // namespace kvctl
