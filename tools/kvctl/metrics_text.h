// The Prometheus text exposition (format 0.0.4) of the ledger segments, for `kvctl metrics`:
// one family per metric with its HELP and TYPE lines, per-segment and per-process samples.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tools/kvctl/inventory.h"

namespace kvctl {

// The Content-Type of RenderMetrics' output.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

// A label value escaped for the exposition format: backslash, double quote and newline become
// \\, \" and \n; other control and non-ASCII bytes (never written by the shim, so only found in
// a damaged segment) become '?', so that the output is always valid UTF-8.
std::string EscapeLabelValue(std::string_view value);

// Every metric of `entries`, families in a fixed order (each family's HELP and TYPE lines are
// written even when it has no sample, so that a scraper always sees the whole schema).
std::string RenderMetrics(const std::vector<SegmentEntry>& entries);

// The names of the families RenderMetrics writes, in order (for tests and docs checks).
std::vector<std::string> MetricFamilyNames();

}  // namespace kvctl
