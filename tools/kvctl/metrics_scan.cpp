#include "tools/kvctl/metrics_scan.h"

#include <algorithm>

namespace kvctl {

std::optional<SegmentEntry> UnfinishedSegment(const std::string& name) {
  SegmentEntry entry = Inspect(name);
  if (entry.status == SegmentStatus::kCreating) return SegmentEntry{};  // empty name: leave out
  if (entry.status == SegmentStatus::kCorrupt && entry.unfinished) return entry;
  return std::nullopt;
}

std::vector<SegmentEntry> ScanForMetrics() {
  std::vector<SegmentEntry> out = InspectAll();
  std::erase_if(out, [](const SegmentEntry& e) { return e.status == SegmentStatus::kCreating; });
  return out;
}

}  // namespace kvctl
