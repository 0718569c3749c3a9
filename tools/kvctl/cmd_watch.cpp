// kvctl watch NAME: a refreshing table of one segment's processes.
#include <fmt/core.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "core/ledger/ledger_name.h"
#include "tools/kvctl/commands.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"

namespace kvctl {
namespace {

struct WatchOptions {
  std::string name;
  bool json = false;
  double interval = 1.0;
  unsigned count = 0;
};

void PrintTable(const SegmentEntry& e) {
  const auto& s = *e.snapshot;
  std::cout << fmt::format(
      "{}  GPU {}  budget {}  used {}  reserved {}  free {}  {} live, {} dead\n\n",
      Printable(e.name), Printable(s.gpu_uuid), FormatBytes(s.budget), FormatBytes(s.in_use),
      FormatBytes(s.reserved), FormatBytes(s.budget > s.charged ? s.budget - s.charged : 0), s.live,
      s.dead);
  if (s.slots.empty()) {
    std::cout << "no processes attached\n";
    return;
  }
  Table table(
      {"PID", "LABEL", "LIMIT", "IN-USE", "RESERVED", "PEAK", "OTHER", "HEARTBEAT", "STATE"},
      {true, false, true, true, true, true, true, true, false});
  for (const auto& slot : s.slots) {
    table.AddRow({std::to_string(slot.pid), Printable(slot.label), FormatLimit(slot.limit),
                  FormatBytes(slot.in_use), FormatBytes(slot.reserved), FormatBytes(slot.peak),
                  FormatBytes(slot.other), FormatAge(HeartbeatAge(slot)),
                  std::string(SlotStateName(slot)) + (slot.other_pidns ? " (other pid ns)" : "")});
  }
  table.Print(std::cout);
}

int RunWatch(const WatchOptions& o) {
  auto name = kvcached::ledger::NormalizeSegmentName(o.name);
  if (!name.ok()) {
    PrintError(name.status().message());
    return kExitUsage;
  }
  const bool clear = !o.json && ::isatty(STDOUT_FILENO) != 0;
  for (unsigned i = 0; o.count == 0 || i < o.count; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::duration<double>(o.interval));
    const SegmentEntry e = Inspect(name.value());
    if (!e.snapshot) {
      PrintError(e.error);
      return kExitFailure;
    }
    if (o.json) {
      std::cout << Dump(SegmentJson(e, true), -1) << std::endl;  // one JSON object per line
      continue;
    }
    if (clear)
      std::cout << "\033[H\033[2J";
    else if (i > 0)
      std::cout << '\n';
    PrintTable(e);
    std::cout.flush();
  }
  return kExitOk;
}

}  // namespace

void AddWatchCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<WatchOptions>();
  auto* cmd = app.add_subcommand(
      "watch",
      "Refreshing table of one segment's processes: pid, label, limit, in-use, reserved, "
      "peak, other (passthrough) memory, heartbeat age");
  cmd->add_option("NAME", o->name, "Segment: NAME, kvcached_NAME or /dev/shm/kvcached_NAME")
      ->required();
  cmd->add_flag("--json", o->json, "Print one JSON object per refresh (JSON lines)");
  cmd->add_option("--interval", o->interval, "Seconds between refreshes")
      ->check(CLI::Range(0.05, 3600.0))
      ->capture_default_str();
  cmd->add_option("--count", o->count, "Stop after N refreshes (0 = until interrupted)")
      ->capture_default_str();
  cmd->callback([o, &exit_code] { exit_code = RunWatch(*o); });
}

}  // namespace kvctl
