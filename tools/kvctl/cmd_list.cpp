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

// Each live process's share of its segment's budget (docs/sharing.md): weight, guaranteed
// minimum, what it holds, its fair share now and, while it is refused below it, its deficit.
void PrintShares(const std::vector<SegmentEntry>& entries) {
  Table table({"SEGMENT", "PID", "LABEL", "WEIGHT", "MIN", "HELD", "FAIR SHARE", "DEFICIT"},
              {false, true, false, true, true, true, true, true});
  bool any = false;
  for (const auto& e : entries) {
    if (!e.snapshot) continue;
    for (const auto& p : e.snapshot->slots) {
      if (p.dead) continue;
      any = true;
      table.AddRow(
          {Printable(e.name), std::to_string(p.pid), p.label.empty() ? "-" : Printable(p.label),
           fmt::format("{:g}", static_cast<double>(p.weight_milli) / 1000.0),
           p.share_min == 0 ? "-" : FormatBytes(p.share_min), FormatBytes(p.tentative + p.charged),
           FormatBytes(p.fair_share), p.deficit == 0 ? "-" : FormatBytes(p.deficit)});
    }
  }
  if (!any) return;
  std::cout << '\n';
  table.Print(std::cout);
}

// The engine hook of each live process that reported its totals (kvcached_report_engine_steps):
// steps, mean hook time and C API calls per step. Left out while no engine reported.
void PrintEngineHooks(const std::vector<SegmentEntry>& entries) {
  Table table({"SEGMENT", "PID", "LABEL", "STEPS", "HOOK/STEP", "C CALLS/STEP"},
              {false, true, false, true, true, true});
  bool any = false;
  for (const auto& e : entries) {
    if (!e.snapshot) continue;
    for (const auto& p : e.snapshot->slots) {
      if (p.dead || !p.engine_reported) continue;
      any = true;
      const std::string calls =
          p.engine_steps == 0 ? "-"
                              : fmt::format("{:.2f}", static_cast<double>(p.engine_hook_c_calls) /
                                                          static_cast<double>(p.engine_steps));
      table.AddRow({Printable(e.name), std::to_string(p.pid),
                    p.label.empty() ? "-" : Printable(p.label), std::to_string(p.engine_steps),
                    FormatMicros(HookMicrosPerStep(p)), calls});
    }
  }
  if (!any) return;
  std::cout << '\n';
  table.Print(std::cout);
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
      table.AddRow({Printable(e.name), "-", "-", "-", "-", "-", "-", StatusText(e)});
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
  PrintShares(entries);
  PrintEngineHooks(entries);
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
