// kvctl kvtop: full-screen live view of every segment and process (ncurses), quits on q.
#include <curses.h>
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "tools/kvctl/cli_numbers.h"
#include "tools/kvctl/commands.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"

namespace kvctl {
namespace {

enum Colors : short { kInUse = 1, kReserved = 2, kTitle = 3, kBad = 4 };

// Draws `text` at (y, x), clipped to the screen width.
void Put(int y, int x, const std::string& text, attr_t attr = A_NORMAL) {
  const int width = COLS - x;
  if (y >= LINES || width <= 0) return;
  attron(attr);
  mvaddnstr(y, x, text.c_str(), width);
  attroff(attr);
}

void PutBar(int y, int x, std::uint64_t in_use, std::uint64_t reserved, std::uint64_t total,
            int width) {
  if (y >= LINES || width <= 2) return;
  const std::string bar = Bar(in_use, reserved, total, width - 2);
  move(y, x);
  addch('[');
  for (char c : bar) {
    const short pair = c == '#' ? short{kInUse} : c == '+' ? short{kReserved} : short{0};
    if (pair != 0 && has_colors()) attron(COLOR_PAIR(pair));
    addch(static_cast<chtype>(c));
    if (pair != 0 && has_colors()) attroff(COLOR_PAIR(pair));
  }
  addch(']');
}

void Draw(double interval) {
  std::vector<SegmentEntry> entries = InspectAll();
  std::stable_sort(entries.begin(), entries.end(),
                   [](const SegmentEntry& a, const SegmentEntry& b) {
                     const std::uint64_t ua = a.snapshot ? a.snapshot->charged : 0;
                     const std::uint64_t ub = b.snapshot ? b.snapshot->charged : 0;
                     return ua > ub;
                   });
  std::size_t procs = 0;
  for (const auto& e : entries) procs += e.snapshot ? e.snapshot->live : 0;
  erase();
  Put(0, 0,
      fmt::format("kvctl kvtop  {} segment(s), {} live process(es)  refresh {:.1f}s  "
                  "# in use  + reserved  q quits",
                  entries.size(), procs, interval),
      A_REVERSE);
  int y = 2;
  if (entries.empty()) Put(y, 0, "no kvcached segments in /dev/shm");
  const int bar_width = std::max(12, std::min(50, COLS - 70));
  for (const auto& e : entries) {
    if (y >= LINES) break;
    if (!e.snapshot) {
      Put(y++, 0, fmt::format("{}  {}: {}", Printable(e.name), StatusText(e), Printable(e.error)),
          has_colors() ? COLOR_PAIR(kBad) : A_BOLD);
      ++y;
      continue;
    }
    const auto& s = *e.snapshot;
    Put(y++, 0,
        fmt::format("{}  {}  budget {}  used {}  reserved {}  free {}  {} live{}{}",
                    Printable(e.name), Printable(s.gpu_uuid), FormatBytes(s.budget),
                    FormatBytes(s.in_use), FormatBytes(s.reserved),
                    FormatBytes(s.budget > s.charged ? s.budget - s.charged : 0), s.live,
                    s.dead > 0 ? fmt::format(", {} dead", s.dead) : "",
                    e.status == SegmentStatus::kStale ? "  STALE" : ""),
        A_BOLD);
    PutBar(y++, 2, s.in_use, s.reserved, s.budget, std::min(COLS - 4, 80));
    std::vector<kvcached::ledger::SlotSnapshot> slots = s.slots;
    std::stable_sort(slots.begin(), slots.end(),
                     [](const auto& a, const auto& b) { return a.charged > b.charged; });
    Put(y++, 2,
        fmt::format("{:>8}  {:<20}  {:>10}  {:>10}  {:>10}  {:>9}  {:<5}  ", "PID", "LABEL",
                    "IN-USE", "RESERVED", "LIMIT", "HEARTBEAT", "STATE"),
        A_UNDERLINE);
    for (const auto& slot : slots) {
      if (y >= LINES) break;
      const std::string row =
          fmt::format("{:>8}  {:<20.20}  {:>10}  {:>10}  {:>10}  {:>9}  {:<5}  ", slot.pid,
                      Printable(slot.label), FormatBytes(slot.in_use), FormatBytes(slot.reserved),
                      FormatLimit(slot.limit), FormatAge(HeartbeatAge(slot)), SlotStateName(slot));
      Put(y, 2, row, slot.dead ? A_DIM : A_NORMAL);
      const std::uint64_t scale =
          slot.limit == kvcached::ledger::kNoLimit ? s.budget : std::min(slot.limit, s.budget);
      PutBar(y, 2 + static_cast<int>(row.size()), slot.in_use, slot.reserved, scale, bar_width);
      ++y;
    }
    ++y;
  }
  refresh();
}

int RunKvtop(double interval) {
  if (::isatty(STDOUT_FILENO) == 0 || ::isatty(STDIN_FILENO) == 0) {
    PrintError(
        "kvtop needs a terminal; for scripts use `kvctl list --json` or `kvctl watch NAME "
        "--json`");
    return kExitFailure;
  }
  SCREEN* screen = newterm(nullptr, stdout, stdin);
  if (screen == nullptr) {
    PrintError("cannot start the terminal UI (is TERM set to a known terminal?)");
    return kExitFailure;
  }
  cbreak();
  noecho();
  curs_set(0);
  keypad(stdscr, TRUE);
  if (has_colors()) {
    start_color();
    use_default_colors();
    init_pair(kInUse, COLOR_GREEN, -1);
    init_pair(kReserved, COLOR_YELLOW, -1);
    init_pair(kTitle, COLOR_CYAN, -1);
    init_pair(kBad, COLOR_RED, -1);
  }
  timeout(static_cast<int>(interval * 1000));
  for (;;) {
    Draw(interval);
    const int ch = getch();
    if (ch == 'q' || ch == 'Q') break;
  }
  endwin();
  delscreen(screen);
  return kExitOk;
}

}  // namespace

void AddKvtopCommand(CLI::App& app, int& exit_code) {
  auto interval = std::make_shared<std::string>("1");
  auto* cmd = app.add_subcommand(
      "kvtop",
      "Full-screen live view of every GPU segment and process, with bars, sorted by use "
      "(q quits)");
  cmd->add_option("--interval", *interval, "Seconds between refreshes, 0.1 to 60 (default 1)");
  cmd->callback([interval, &exit_code] {
    // Taken as text and checked here: junk gets one message naming the option and the range.
    auto seconds = ParseSeconds("--interval", *interval, 0.1, 60.0);
    if (!seconds.ok()) {
      PrintError(seconds.status().message());
      exit_code = kExitUsage;
      return;
    }
    exit_code = RunKvtop(seconds.value());
  });
}

}  // namespace kvctl
