// What kvctl knows about the segments in /dev/shm: each kvcached_* file, opened read-only,
// validated and parsed; unusable ones are reported with the reason instead of being skipped.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/ledger/ledger_snapshot.h"

namespace kvctl {

enum class SegmentStatus {
  kOk,            // valid, at least one live process or none at all ("idle")
  kStale,         // valid, but every attached process is dead
  kCorrupt,       // fails validation (foreign, truncated, bad fields, never initialised)
  kUnreadable,    // permission denied or another open error
  kOtherVersion,  // a kvcached segment of another layout version (another kvcached release)
  kCreating,      // its creator is initialising it right now (no header yet, a few seconds old)
};
const char* StatusName(SegmentStatus status);  // for JSON and metrics labels

struct SegmentEntry {
  std::string name;
  std::string path;
  SegmentStatus status = SegmentStatus::kOk;
  std::string error;        // why it is corrupt/unreadable/of another version/not ready
  bool unfinished = false;  // no header yet (being created, or its creator died)
  std::optional<std::uint32_t> layout_version;  // from its header, when it has one
  uid_t uid = 0;
  mode_t mode = 0;
  gid_t gid = 0;
  std::optional<kvcached::ledger::SegmentSnapshot> snapshot;
};

// For people: "other version (layout 3)", "being created", else StatusName.
std::string StatusText(const SegmentEntry& entry);

// Names of every kvcached_* entry in /dev/shm, sorted.
std::vector<std::string> SegmentNames();
// Never waits for a creator still at it (kCreating instead), and reads only the header of a
// segment of another layout version (kOtherVersion).
SegmentEntry Inspect(const std::string& name);
std::vector<SegmentEntry> InspectAll();

// Seconds since a slot's heartbeat (negative when unknown).
double HeartbeatAge(const kvcached::ledger::SlotSnapshot& slot);
// Mean microseconds the engine hook spent per step (its reported totals), or nothing until the
// engine reported a step.
std::optional<double> HookMicrosPerStep(const kvcached::ledger::SlotSnapshot& slot);
// "live", "dead", "reclaiming".
const char* SlotStateName(const kvcached::ledger::SlotSnapshot& slot);

nlohmann::json SlotJson(const kvcached::ledger::SlotSnapshot& slot);
nlohmann::json SegmentJson(const SegmentEntry& entry, bool with_processes);
// Serialises with invalid UTF-8 replaced (segment text is not trusted).
std::string Dump(const nlohmann::json& j, int indent = 2);

}  // namespace kvctl
