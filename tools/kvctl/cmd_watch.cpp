// kvctl watch NAME: a refreshing table of one segment's processes.
#include <fmt/core.h>
#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "core/ledger/ledger_name.h"
#include "tools/kvctl/cli_numbers.h"
#include "tools/kvctl/commands.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"

namespace kvctl {
namespace {

// --interval bounds: 50 ms keeps a refresh loop from spinning, an hour is already unusual.
constexpr double kMinInterval = 0.05;
constexpr double kMaxInterval = 3600.0;
constexpr std::uint64_t kMaxCount = 1000000000;

struct WatchOptions {
  std::string name;
  bool json = false;
  std::string interval_text = "1";
  std::string count_text;  // empty: refresh until interrupted
  double interval = 1.0;
  std::uint64_t count = 0;  // 0: until interrupted (only when --count is absent)
};

// Options taken as text and checked here, so that junk gets one message naming the option.
bool ParseNumbers(WatchOptions& o) {
  auto interval = ParseSeconds("--interval", o.interval_text, kMinInterval, kMaxInterval);
  if (!interval.ok()) {
    PrintError(interval.status().message());
    return false;
  }
  o.interval = interval.value();
  if (o.count_text.empty()) return true;
  // --count 0 is refused rather than read as "forever": leaving the option out means that.
  auto count = ParseCount("--count", o.count_text, 1, kMaxCount);
  if (!count.ok()) {
    PrintError(count.status().message() + "; leave --count out to refresh until interrupted");
    return false;
  }
  o.count = count.value();
  return true;
}

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
  // The hook column only once an engine reported its step totals (kvcached_report_engine_steps).
  bool hooks = false;
  for (const auto& slot : s.slots) hooks = hooks || slot.engine_reported;
  std::vector<std::string> header = {"PID",  "LABEL", "LIMIT",     "IN-USE", "RESERVED",
                                     "PEAK", "OTHER", "HEARTBEAT", "STATE"};
  std::vector<bool> right = {true, false, true, true, true, true, true, true, false};
  if (hooks) {
    header.insert(header.end() - 1, "HOOK/STEP");
    right.insert(right.end() - 1, true);
  }
  Table table(std::move(header), std::move(right));
  for (const auto& slot : s.slots) {
    std::vector<std::string> row = {
        std::to_string(slot.pid),
        Printable(slot.label),
        FormatLimit(slot.limit),
        FormatBytes(slot.in_use),
        FormatBytes(slot.reserved),
        FormatBytes(slot.peak),
        FormatBytes(slot.other),
        FormatAge(HeartbeatAge(slot)),
        std::string(SlotStateName(slot)) + (slot.other_pidns ? " (other pid ns)" : "")};
    if (hooks) row.insert(row.end() - 1, FormatMicros(HookMicrosPerStep(slot)));
    table.AddRow(std::move(row));
  }
  table.Print(std::cout);
}

int RunWatch(WatchOptions& o) {
  if (!ParseNumbers(o)) return kExitUsage;
  auto name = kvcached::ledger::NormalizeSegmentName(o.name);
  if (!name.ok()) {
    PrintError(name.status().message());
    return kExitUsage;
  }
  const bool clear = !o.json && ::isatty(STDOUT_FILENO) != 0;
  for (std::uint64_t i = 0; o.count == 0 || i < o.count; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::duration<double>(o.interval));
    const SegmentEntry e = Inspect(name.value());
    if (e.status == SegmentStatus::kCreating) {  // its creator is at it: show it at the next turn
      if (o.json) {
        std::cout << Dump(SegmentJson(e, true), -1) << std::endl;
      } else {
        std::cout << Printable(e.error) << std::endl;
      }
      continue;
    }
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
  cmd->add_option("--interval", o->interval_text,
                  "Seconds between refreshes, 0.05 to 3600 (default 1)");
  cmd->add_option("--count", o->count_text,
                  "Stop after N refreshes, 1 to 1000000000 (default: until interrupted)");
  cmd->callback([o, &exit_code] { exit_code = RunWatch(*o); });
}

}  // namespace kvctl
