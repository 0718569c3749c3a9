// The segments `kvctl metrics` reports at each scrape: like InspectAll, but a segment whose
// creator has not finished it (or died before finishing) is never waited for.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tools/kvctl/inventory.h"
#include "tools/kvctl/segment_peek.h"

namespace kvctl {

// Nothing when /dev/shm/`name` has its header (open it with Inspect). Otherwise, an entry
// reporting it as corrupt when it has been unfinished for longer than kUnfinishedGrace, or an
// entry with no snapshot and an empty name (leave it out: its creator may still be at it).
std::optional<SegmentEntry> UnfinishedSegment(const std::string& name);

// Every segment but those being created (InspectAll, which never waits for a creator: a scrape
// must answer within Prometheus' timeout, often 1 s, whatever lies in /dev/shm).
std::vector<SegmentEntry> ScanForMetrics();

}  // namespace kvctl
