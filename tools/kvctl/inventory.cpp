#include "tools/kvctl/inventory.h"

#include <dirent.h>
#include <fmt/core.h>
#include <sys/stat.h>

#include <algorithm>
#include <ctime>

#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_process.h"
#include "core/ledger/ledger_segment.h"
#include "tools/kvctl/segment_peek.h"

namespace kvctl {

namespace ledger = kvcached::ledger;

const char* StatusName(SegmentStatus status) {
  switch (status) {
    case SegmentStatus::kOk:
      return "ok";
    case SegmentStatus::kStale:
      return "stale";
    case SegmentStatus::kCorrupt:
      return "corrupt";
    case SegmentStatus::kUnreadable:
      return "unreadable";
    case SegmentStatus::kOtherVersion:
      return "other_version";
    case SegmentStatus::kCreating:
      return "creating";
  }
  return "?";
}

std::string StatusText(const SegmentEntry& e) {
  if (e.status == SegmentStatus::kOtherVersion && e.layout_version) {
    return fmt::format("other version (layout {})", *e.layout_version);
  }
  if (e.status == SegmentStatus::kCreating) return "being created";
  return StatusName(e.status);
}

std::vector<std::string> SegmentNames() {
  std::vector<std::string> names;
  const std::string dir(ledger::kShmDir);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = static_cast<const char*>(e->d_name);
    if (ledger::IsSegmentName(name)) names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

SegmentEntry Inspect(const std::string& name) {
  SegmentEntry entry;
  entry.name = name;
  entry.path = ledger::SegmentPath(name);
  struct stat st {};
  if (::lstat(entry.path.c_str(), &st) == 0) {
    entry.uid = st.st_uid;
    entry.gid = st.st_gid;
    entry.mode = st.st_mode & 07777;
    if (!S_ISREG(st.st_mode)) {
      entry.status = SegmentStatus::kCorrupt;
      entry.error = fmt::format("{} is not a regular file", entry.path);
      return entry;
    }
  }
  const HeaderPeek peek = PeekHeader(entry.path);
  if (peek.opened && peek.regular && !peek.finished) {
    entry.unfinished = true;
    if (std::time(nullptr) - peek.st.st_mtime <= kUnfinishedGrace.count()) {
      entry.status = SegmentStatus::kCreating;
      entry.error = fmt::format("{} is being created (its creator has not written the header yet)",
                                entry.path);
      return entry;
    }
    entry.status = SegmentStatus::kCorrupt;
    entry.error = fmt::format(
        "{} was never initialised ({} bytes, no header): its creator died while creating it; "
        "remove it with `kvctl delete {}`",
        entry.path, peek.st.st_size, name);
    return entry;
  }
  if (peek.header) entry.layout_version = peek.header->version;
  if (const auto version = OtherLayoutVersion(peek)) {
    entry.status = SegmentStatus::kOtherVersion;
    entry.error = OtherVersionMessage(entry.path, name, *version);
    return entry;
  }
  auto seg = ledger::Segment::Open(name, ledger::Segment::Access::kReadOnly);
  if (!seg.ok()) {
    const int err = seg.status().driver_code();
    entry.status = (err != 0) ? SegmentStatus::kUnreadable : SegmentStatus::kCorrupt;
    entry.error = seg.status().message();
    return entry;
  }
  entry.snapshot = ledger::TakeSnapshot(*seg.value());
  if (entry.snapshot->live == 0 && entry.snapshot->dead > 0) entry.status = SegmentStatus::kStale;
  return entry;
}

std::vector<SegmentEntry> InspectAll() {
  std::vector<SegmentEntry> out;
  for (const auto& name : SegmentNames()) out.push_back(Inspect(name));
  return out;
}

double HeartbeatAge(const ledger::SlotSnapshot& slot) {
  const std::uint64_t now = ledger::BoottimeNs();
  if (slot.heartbeat_ns == 0 || slot.heartbeat_ns > now) return -1;
  return static_cast<double>(now - slot.heartbeat_ns) / 1e9;
}

std::optional<double> HookMicrosPerStep(const ledger::SlotSnapshot& slot) {
  if (!slot.engine_reported || slot.engine_steps == 0) return std::nullopt;
  return static_cast<double>(slot.engine_hook_ns) / 1e3 / static_cast<double>(slot.engine_steps);
}

const char* SlotStateName(const ledger::SlotSnapshot& slot) {
  if (slot.state == ledger::SlotState::kReclaiming) return "reclaiming";
  return slot.dead ? "dead" : "live";
}

nlohmann::json SlotJson(const ledger::SlotSnapshot& s) {
  nlohmann::json j;
  j["slot"] = s.index;
  j["pid"] = s.pid;
  j["label"] = s.label;
  j["state"] = SlotStateName(s);
  j["other_pid_namespace"] = s.other_pidns;
  j["limit_bytes"] =
      s.limit == ledger::kNoLimit ? nlohmann::json(nullptr) : nlohmann::json(s.limit);
  j["in_use_bytes"] = s.in_use;
  j["reserved_bytes"] = s.reserved;
  j["charged_bytes"] = s.charged;
  j["peak_bytes"] = s.peak;
  j["other_bytes"] = s.other;
  j["pages_mapped"] = s.pages_mapped;
  j["pages_unmapped"] = s.pages_unmapped;
  j["sync_maps"] = s.sync_maps;
  j["budget_refusals"] = s.budget_refusals;
  // The engine hook's totals (kvcached_report_engine_steps); null until the engine reports.
  auto engine = [&](std::uint64_t v) {
    return s.engine_reported ? nlohmann::json(v) : nlohmann::json(nullptr);
  };
  j["engine_steps"] = engine(s.engine_steps);
  j["engine_hook_ns"] = engine(s.engine_hook_ns);
  j["engine_hook_c_calls"] = engine(s.engine_hook_c_calls);
  j["weight"] = static_cast<double>(s.weight_milli) / 1000.0;  // sharing (docs/sharing.md)
  j["share_min_bytes"] = s.share_min;
  j["fair_share_bytes"] = s.fair_share;
  j["share_unit_bytes"] = s.share_unit;
  j["deficit_bytes"] = s.deficit;
  j["starved"] = s.starved_since_ns != 0;
  j["share_given_bytes"] = s.share_given;
  j["share_preempted_requests"] = s.share_preempted;
  const double age = HeartbeatAge(s);
  j["heartbeat_age_s"] = age < 0 ? nlohmann::json(nullptr) : nlohmann::json(age);
  return j;
}

nlohmann::json SegmentJson(const SegmentEntry& e, bool with_processes) {
  nlohmann::json j;
  j["name"] = e.name;
  j["path"] = e.path;
  j["status"] = StatusName(e.status);
  j["error"] = e.error.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.error);
  j["owner_uid"] = e.uid;
  j["group_gid"] = e.gid;
  j["mode"] = fmt::format("{:04o}", e.mode);
  j["layout_version"] =
      e.layout_version ? nlohmann::json(*e.layout_version) : nlohmann::json(nullptr);
  if (e.snapshot) {
    const auto& s = *e.snapshot;
    j["gpu_uuid"] = s.gpu_uuid;
    j["gpu_total_bytes"] = s.gpu_total;
    j["budget_bytes"] = s.budget;
    j["used_bytes"] = s.in_use;
    j["reserved_bytes"] = s.reserved;
    j["charged_bytes"] = s.charged;
    j["free_bytes"] = s.budget > s.charged ? s.budget - s.charged : 0;
    j["live_processes"] = s.live;
    j["dead_processes"] = s.dead;
    j["slots"] = s.slot_count;
    j["pressure_requests"] = s.pressure_seq;
  } else {
    // Unreadable or corrupt: every documented field is still there (null: unknown), so that a
    // script never meets a missing key; "error" says why.
    for (const char* key : {"gpu_uuid", "gpu_total_bytes", "budget_bytes", "used_bytes",
                            "reserved_bytes", "charged_bytes", "free_bytes", "live_processes",
                            "dead_processes", "slots", "pressure_requests"}) {
      j[key] = nullptr;
    }
  }
  if (with_processes) {
    j["processes"] = nlohmann::json::array();
    if (e.snapshot) {
      for (const auto& slot : e.snapshot->slots) j["processes"].push_back(SlotJson(slot));
    }
  }
  return j;
}

std::string Dump(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace kvctl
