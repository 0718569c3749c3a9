// kvctl limit TARGET SIZE: sets the per-process limit live (the next admission obeys it).
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <iostream>
#include <map>
#include <memory>
#include <optional>

#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_segment.h"
#include "core/ledger/ledger_slots.h"
#include "core/ledger/ledger_trust.h"
#include "tools/kvctl/commands.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"
#include "tools/kvctl/limit_value.h"

namespace kvctl {
namespace {

namespace ledger = kvcached::ledger;

struct LimitOptions {
  std::string target;
  std::string size;
  std::string segment;
};

struct Match {
  std::string segment;
  uid_t segment_owner = 0;
  ledger::SlotSnapshot slot;
};

bool IsPid(const std::string& s) {
  return !s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos;
}

// The owner of a process of our pid namespace (the owner of /proc/<pid>), if it exists.
std::optional<uid_t> ProcessOwner(std::uint64_t pid) {
  struct stat st {};
  if (::stat(fmt::format("/proc/{}", pid).c_str(), &st) != 0) return std::nullopt;
  return st.st_uid;
}

// Who may cap a process: root, the owner of the segment (the operator who set it up), or the
// owner of the process itself. Anyone else who can write a shared (group) segment may not cap
// another user's engine. Empty when allowed, else the refusal naming the owner.
std::optional<std::string> LimitRefusal(const Match& m) {
  const uid_t me = ::geteuid();
  if (me == 0 || m.segment_owner == me) return std::nullopt;
  const auto owner = m.slot.other_pidns ? std::nullopt : ProcessOwner(m.slot.pid);
  if (owner && *owner == me) return std::nullopt;
  return fmt::format(
      "permission denied: pid {} ({}) in {} belongs to {}; only that user, the segment's owner "
      "({}) or root may change its limit",
      m.slot.pid, m.slot.label.empty() ? "no label" : Printable(m.slot.label), m.segment,
      owner ? ledger::OwnerText(*owner) : std::string("a process of another pid namespace"),
      ledger::OwnerText(m.segment_owner));
}

int RunLimit(const LimitOptions& o) {
  auto value = ParseLimitValue(o.size);
  if (!value.ok()) {
    PrintError(value.status().message());
    return kExitUsage;
  }
  std::vector<SegmentEntry> entries;
  if (!o.segment.empty()) {
    auto name = ledger::NormalizeSegmentName(o.segment);
    if (!name.ok()) {
      PrintError(name.status().message());
      return kExitUsage;
    }
    entries.push_back(Inspect(name.value()));
    if (!entries.back().snapshot) {
      PrintError(entries.back().error);
      return kExitFailure;
    }
  } else {
    entries = InspectAll();
  }

  // TARGET is a pid, a segment (every process in it) or a label.
  std::vector<Match> matches;
  std::vector<Match> dead;
  std::string what;
  auto collect = [&](auto&& pred) {
    for (const auto& e : entries) {
      if (!e.snapshot) continue;
      for (const auto& s : e.snapshot->slots) {
        if (!pred(e, s)) continue;
        (s.dead ? dead : matches).push_back({e.name, e.uid, s});
      }
    }
  };
  if (IsPid(o.target)) {
    what = "pid " + o.target;
    const auto pid = std::stoull(o.target);
    collect([&](const SegmentEntry&, const ledger::SlotSnapshot& s) { return s.pid == pid; });
  } else if (auto name = ledger::NormalizeSegmentName(o.target);
             name.ok() && std::any_of(entries.begin(), entries.end(), [&](const SegmentEntry& e) {
               return e.name == name.value();
             })) {
    what = "segment " + name.value();
    collect(
        [&](const SegmentEntry& e, const ledger::SlotSnapshot&) { return e.name == name.value(); });
    if (matches.empty() && dead.empty()) {
      PrintError(fmt::format("no process is attached to {}", name.value()));
      return kExitFailure;
    }
  } else {
    what = "label '" + o.target + "'";
    collect(
        [&](const SegmentEntry&, const ledger::SlotSnapshot& s) { return s.label == o.target; });
  }
  if (matches.empty() && IsPid(o.target)) {
    // Not in any segment we can read: when the process is another user's, say so (the
    // segment it uses is then usually one we may not read either), rather than "no match".
    const auto owner = ProcessOwner(std::stoull(o.target));
    if (owner && *owner != ::geteuid() && ::geteuid() != 0) {
      std::string unreadable;
      for (const auto& e : entries) {
        if (e.snapshot) continue;
        unreadable += fmt::format("{}{} (owned by {})", unreadable.empty() ? "" : ", ", e.path,
                                  ledger::OwnerText(e.uid));
      }
      PrintError(fmt::format(
          "permission denied: pid {} belongs to {}, and is in no segment you may read{}; run "
          "`kvctl limit` as that user or as root",
          o.target, ledger::OwnerText(*owner),
          unreadable.empty() ? "" : " (unreadable to you: " + unreadable + ")"));
      return kExitFailure;
    }
  }
  if (matches.empty()) {
    if (!dead.empty()) {
      PrintError(
          fmt::format("{} matches only dead processes (their slots are reclaimed when the "
                      "next engine needs memory)",
                      Printable(what)));
    } else {
      PrintError(
          fmt::format("no live process matches {} in any kvcached segment (see `kvctl "
                      "list --json` for pids and labels)",
                      Printable(what)));
    }
    return kExitFailure;
  }

  std::map<std::string, std::unique_ptr<ledger::Segment>> open;
  int rc = kExitOk;
  for (const auto& m : matches) {
    if (auto refusal = LimitRefusal(m)) {
      PrintError(*refusal);
      rc = kExitFailure;
      continue;
    }
    auto& seg = open[m.segment];
    if (!seg) {
      auto opened = ledger::Segment::Open(m.segment, ledger::Segment::Access::kOperator);
      if (!opened.ok()) {
        PrintError(opened.status().message());
        rc = kExitFailure;
        open.erase(m.segment);
        continue;
      }
      seg = std::move(opened).value();
    }
    const std::uint64_t wanted = value.value().Resolve(seg->budget());
    auto stored = ledger::SetSlotLimit(*seg, m.slot.index, m.slot.owner_word, wanted);
    if (!stored.ok()) {
      PrintError(stored.status().message());
      rc = kExitFailure;
      continue;
    }
    std::string msg = fmt::format("{}: pid {} ({}): ", m.segment, m.slot.pid,
                                  m.slot.label.empty() ? "no label" : Printable(m.slot.label));
    if (stored.value() == ledger::kNoLimit) {
      msg +=
          fmt::format("limit removed; the segment budget ({}) applies", FormatBytes(seg->budget()));
    } else {
      msg += fmt::format("limit set to {}", FormatBytes(stored.value()));
      if (wanted > stored.value()) {
        msg += fmt::format(" (asked {}, clamped to the budget)", FormatBytes(wanted));
      }
      if (m.slot.charged > stored.value()) {
        msg += fmt::format(
            "; it holds {} now and keeps it, but takes no new pages until it is "
            "below the limit",
            FormatBytes(m.slot.charged));
      }
    }
    std::cout << msg << '\n';
  }
  return rc;
}

}  // namespace

void AddLimitCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<LimitOptions>();
  auto* cmd = app.add_subcommand(
      "limit",
      "Set a process's memory limit live: TARGET is a pid, a label, or a segment (every "
      "process in it); SIZE is bytes (8G, 512MiB), a fraction of the budget (0.5, 50%) "
      "or none. Clamped to the budget; takes effect at the process's next page");
  cmd->add_option("TARGET", o->target, "pid, label or segment name")->required();
  cmd->add_option("SIZE", o->size, "8G, 512MiB, 0.5, 50% or none")->required();
  cmd->add_option("--segment", o->segment, "Only look in this segment");
  cmd->callback([o, &exit_code] { exit_code = RunLimit(*o); });
}

}  // namespace kvctl
