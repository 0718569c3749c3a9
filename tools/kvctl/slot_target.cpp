#include "tools/kvctl/slot_target.h"

#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <iostream>

#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_trust.h"
#include "tools/kvctl/commands.h"
#include "tools/kvctl/format.h"
#include "tools/kvctl/inventory.h"

namespace kvctl {
namespace {

namespace ledger = kvcached::ledger;

bool IsPid(const std::string& s) {
  return !s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos;
}

// The owner of a process of our pid namespace (the owner of /proc/<pid>), if it exists.
std::optional<uid_t> ProcessOwner(std::uint64_t pid) {
  struct stat st {};
  if (::stat(fmt::format("/proc/{}", pid).c_str(), &st) != 0) return std::nullopt;
  return st.st_uid;
}

}  // namespace

std::optional<std::string> WriteRefusal(const SlotMatch& m, const std::string& change) {
  // Anyone else who can write a shared (group) segment may not steer another user's engine.
  const uid_t me = ::geteuid();
  if (me == 0 || m.segment_owner == me) return std::nullopt;
  const auto owner = m.slot.other_pidns ? std::nullopt : ProcessOwner(m.slot.pid);
  if (owner && *owner == me) return std::nullopt;
  return fmt::format(
      "permission denied: pid {} ({}) in {} belongs to {}; only that user, the segment's owner "
      "({}) or root may change {}",
      m.slot.pid, m.slot.label.empty() ? "no label" : Printable(m.slot.label), m.segment,
      owner ? ledger::OwnerText(*owner) : std::string("a process of another pid namespace"),
      ledger::OwnerText(m.segment_owner), change);
}

std::string ProcessLine(const SlotMatch& m) {
  return fmt::format("{}: pid {} ({}): ", m.segment, m.slot.pid,
                     m.slot.label.empty() ? "no label" : Printable(m.slot.label));
}

TargetResolution ResolveTargets(const std::string& target, const std::string& segment,
                                const std::string& command) {
  TargetResolution out;
  std::vector<SegmentEntry> entries;
  if (!segment.empty()) {
    auto name = ledger::NormalizeSegmentName(segment);
    if (!name.ok()) {
      PrintError(name.status().message());
      out.exit_code = kExitUsage;
      return out;
    }
    entries.push_back(Inspect(name.value()));
    if (!entries.back().snapshot) {
      PrintError(entries.back().error);
      out.exit_code = kExitFailure;
      return out;
    }
  } else {
    entries = InspectAll();
  }

  std::vector<SlotMatch>& matches = out.matches;
  std::vector<SlotMatch> dead;
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
  if (IsPid(target)) {
    what = "pid " + target;
    const auto pid = std::stoull(target);
    collect([&](const SegmentEntry&, const ledger::SlotSnapshot& s) { return s.pid == pid; });
  } else if (auto name = ledger::NormalizeSegmentName(target);
             name.ok() && std::any_of(entries.begin(), entries.end(), [&](const SegmentEntry& e) {
               return e.name == name.value();
             })) {
    what = "segment " + name.value();
    collect(
        [&](const SegmentEntry& e, const ledger::SlotSnapshot&) { return e.name == name.value(); });
    if (matches.empty() && dead.empty()) {
      PrintError(fmt::format("no process is attached to {}", name.value()));
      out.exit_code = kExitFailure;
      return out;
    }
  } else {
    what = "label '" + target + "'";
    collect([&](const SegmentEntry&, const ledger::SlotSnapshot& s) { return s.label == target; });
  }
  if (matches.empty() && IsPid(target)) {
    // Not in any segment we can read: when the process is another user's, say so (the
    // segment it uses is then usually one we may not read either), rather than "no match".
    const auto owner = ProcessOwner(std::stoull(target));
    if (owner && *owner != ::geteuid() && ::geteuid() != 0) {
      std::string unreadable;
      for (const auto& e : entries) {
        if (e.snapshot) continue;
        unreadable += fmt::format("{}{} (owned by {})", unreadable.empty() ? "" : ", ", e.path,
                                  ledger::OwnerText(e.uid));
      }
      PrintError(fmt::format(
          "permission denied: pid {} belongs to {}, and is in no segment you may read{}; run "
          "`kvctl {}` as that user or as root",
          target, ledger::OwnerText(*owner),
          unreadable.empty() ? "" : " (unreadable to you: " + unreadable + ")", command));
      out.exit_code = kExitFailure;
      return out;
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
    out.exit_code = kExitFailure;
  }
  return out;
}

kvcached::Result<ledger::Segment*> OperatorSegments::Get(const std::string& name) {
  auto& seg = open_[name];
  if (!seg) {
    auto opened = ledger::Segment::Open(name, ledger::Segment::Access::kOperator);
    if (!opened.ok()) {
      open_.erase(name);
      return opened.status();
    }
    seg = std::move(opened).value();
  }
  return seg.get();
}

int ApplyToTargets(const TargetResolution& targets, const std::string& what,
                   const SlotChange& change) {
  OperatorSegments open;
  int rc = kExitOk;
  for (const auto& m : targets.matches) {
    if (auto refusal = WriteRefusal(m, what)) {
      PrintError(*refusal);
      rc = kExitFailure;
      continue;
    }
    auto opened = open.Get(m.segment);
    if (!opened.ok()) {
      PrintError(opened.status().message());
      rc = kExitFailure;
      continue;
    }
    auto line = change(m, *opened.value());
    if (!line.ok()) {
      PrintError(line.status().message());
      rc = kExitFailure;
      continue;
    }
    std::cout << ProcessLine(m) << line.value() << '\n';
  }
  return rc;
}

}  // namespace kvctl
