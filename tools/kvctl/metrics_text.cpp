#include "tools/kvctl/metrics_text.h"

#include <fmt/core.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <utility>

namespace kvctl {
namespace {

namespace ledger = kvcached::ledger;

using Labels = std::vector<std::pair<const char*, std::string>>;
// One sample of a segment-level family: extra labels (after segment and gpu_uuid) and the value.
struct SegmentSample {
  Labels extra;
  std::string value;
};
using SegmentValues = std::function<std::vector<SegmentSample>(const SegmentEntry&)>;
// A process-level value, or nothing when it is unknown (the sample is left out).
using ProcessValue = std::function<std::optional<std::string>(const ledger::SegmentSnapshot&,
                                                              const ledger::SlotSnapshot&)>;

struct Family {
  const char* name;
  const char* type;  // "gauge" or "counter"
  const char* help;
  SegmentValues segment;  // exactly one of the two is set
  ProcessValue process;
};

std::string Int(std::uint64_t v) {
  return fmt::format("{}", v);
}

// A gauge or counter of a valid segment, labelled by segment and GPU only.
SegmentValues Of(std::uint64_t (*get)(const ledger::SegmentSnapshot&)) {
  return [get](const SegmentEntry& e) -> std::vector<SegmentSample> {
    if (!e.snapshot) return {};
    return {{{}, Int(get(*e.snapshot))}};
  };
}

ProcessValue Slot(std::uint64_t (*get)(const ledger::SlotSnapshot&)) {
  return [get](const ledger::SegmentSnapshot&,
               const ledger::SlotSnapshot& s) -> std::optional<std::string> { return Int(get(s)); };
}

// A value of the engine hook's totals, left out until the engine reported them.
ProcessValue Engine(std::string (*get)(const ledger::SlotSnapshot&)) {
  return [get](const ledger::SegmentSnapshot&,
               const ledger::SlotSnapshot& s) -> std::optional<std::string> {
    if (!s.engine_reported) return std::nullopt;
    return get(s);
  };
}

const std::vector<Family>& Families() {
  static const std::vector<Family> families = {
      {"kvcached_segment_status",
       "gauge",
       "1 for the status of each ledger segment in /dev/shm (ok, stale, corrupt, unreadable, "
       "other_version; see kvctl list)",
       [](const SegmentEntry& e) -> std::vector<SegmentSample> {
         return {{{{"status", StatusName(e.status)}}, "1"}};
       },
       {}},
      {"kvcached_segment_layout_version",
       "gauge",
       "Ledger layout version of the segment (a segment of another version than this kvctl "
       "reads has status other_version: made by another kvcached release)",
       [](const SegmentEntry& e) -> std::vector<SegmentSample> {
         if (!e.layout_version) return {};
         return {{{}, Int(*e.layout_version)}};
       },
       {}},
      {"kvcached_segment_gpu_memory_bytes",
       "gauge",
       "Device memory of the GPU the segment governs",
       Of([](const ledger::SegmentSnapshot& s) { return s.gpu_total; }),
       {}},
      {"kvcached_segment_budget_bytes",
       "gauge",
       "Bytes all processes on the segment may hold together",
       Of([](const auto& s) { return s.budget; }),
       {}},
      {"kvcached_segment_used_bytes",
       "gauge",
       "Bytes holding engine data (in use), summed over the segment's processes",
       Of([](const auto& s) { return s.in_use; }),
       {}},
      {"kvcached_segment_reserved_bytes",
       "gauge",
       "Bytes held but not in use (pools, mapped-ahead pages), summed over the processes",
       Of([](const auto& s) { return s.reserved; }),
       {}},
      {"kvcached_segment_free_bytes",
       "gauge",
       "Budget not charged to any process",
       Of([](const auto& s) { return s.budget > s.charged ? s.budget - s.charged : 0; }),
       {}},
      {"kvcached_segment_processes",
       "gauge",
       "Processes attached to the segment, by state (dead ones await reclamation)",
       [](const SegmentEntry& e) -> std::vector<SegmentSample> {
         if (!e.snapshot) return {};
         return {{{{"state", "live"}}, Int(e.snapshot->live)},
                 {{{"state", "dead"}}, Int(e.snapshot->dead)}};
       },
       {}},
      {"kvcached_segment_slots",
       "gauge",
       "Process slots in the segment (attached processes at most)",
       Of([](const auto& s) -> std::uint64_t { return s.slot_count; }),
       {}},
      {"kvcached_segment_pressure_requests_total",
       "counter",
       "Requests made by refused processes for the others to give memory back",
       Of([](const auto& s) { return s.pressure_seq; }),
       {}},
      {"kvcached_process_alive",
       "gauge",
       "1 while the process lives, 0 once it is dead",
       {},
       [](const auto&, const ledger::SlotSnapshot& s) -> std::optional<std::string> {
         return s.dead ? "0" : "1";
       }},
      {"kvcached_process_limit_bytes",
       "gauge",
       "What the process may hold: its limit (kvctl limit), or the GPU budget when it has none",
       {},
       [](const ledger::SegmentSnapshot& seg,
          const ledger::SlotSnapshot& s) -> std::optional<std::string> {
         return Int(s.limit == ledger::kNoLimit ? seg.budget : std::min(s.limit, seg.budget));
       }},
      {"kvcached_process_in_use_bytes",
       "gauge",
       "Bytes holding the process's engine data",
       {},
       Slot([](const auto& s) { return s.in_use; })},
      {"kvcached_process_reserved_bytes",
       "gauge",
       "Bytes the process holds but does not use (its pool, mapped-ahead pages)",
       {},
       Slot([](const auto& s) { return s.reserved; })},
      {"kvcached_process_peak_bytes",
       "gauge",
       "Highest in-use plus reserved bytes of the process",
       {},
       Slot([](const auto& s) { return s.peak; })},
      {"kvcached_process_other_bytes",
       "gauge",
       "Bytes outside the budget: passed through to the real allocator, and the shim's zero memory",
       {},
       Slot([](const auto& s) { return s.other; })},
      {"kvcached_process_heartbeat_age_seconds",
       "gauge",
       "Seconds since the process's last heartbeat (every 20 ms while it runs)",
       {},
       [](const auto&, const ledger::SlotSnapshot& s) -> std::optional<std::string> {
         const double age = HeartbeatAge(s);
         if (age < 0) return std::nullopt;
         return fmt::format("{:.3f}", age);
       }},
      {"kvcached_process_pages_mapped_total",
       "counter",
       "Pages the process swapped in (zero memory to real memory)",
       {},
       Slot([](const auto& s) { return s.pages_mapped; })},
      {"kvcached_process_pages_unmapped_total",
       "counter",
       "Pages the process swapped out (real memory back to zero memory)",
       {},
       Slot([](const auto& s) { return s.pages_unmapped; })},
      {"kvcached_process_sync_maps_total",
       "counter",
       "Pages swapped in on the engine's own thread (a map-ahead miss: the engine waited)",
       {},
       Slot([](const auto& s) { return s.sync_maps; })},
      {"kvcached_process_budget_refusals_total",
       "counter",
       "Requests of the process that the budget refused (the engine was told to wait)",
       {},
       Slot([](const auto& s) { return s.budget_refusals; })},
      // The engine hook's totals (kvcached_report_engine_steps); left out until it reports.
      {"kvcached_process_engine_steps_total",
       "counter",
       "Engine steps the process's engine hook saw (reported by the hook)",
       {},
       Engine([](const auto& s) { return Int(s.engine_steps); })},
      {"kvcached_process_engine_hook_seconds_total",
       "counter",
       "Seconds the process's engine hook spent over those steps (hook time per step = "
       "rate of this / rate of kvcached_process_engine_steps_total)",
       {},
       Engine([](const auto& s) {
         // Exact decimal seconds (a double would round large totals).
         return fmt::format("{}.{:09}", s.engine_hook_ns / 1'000'000'000,
                            s.engine_hook_ns % 1'000'000'000);
       })},
      {"kvcached_process_engine_hook_c_calls_total",
       "counter",
       "kvcached C API calls the process's engine hook made over those steps",
       {},
       Engine([](const auto& s) { return Int(s.engine_hook_c_calls); })},
      // Sharing (docs/sharing.md).
      {"kvcached_process_share_weight",
       "gauge",
       "The process's weight in the fair division of the budget (default 1; kvctl share)",
       {},
       [](const auto&, const ledger::SlotSnapshot& s) -> std::optional<std::string> {
         return fmt::format("{:g}", static_cast<double>(s.weight_milli) / 1000.0);
       }},
      {"kvcached_process_share_min_bytes",
       "gauge",
       "Memory guaranteed to the process under contention (KVCACHED_SHARE_MIN; kvctl share)",
       {},
       Slot([](const auto& s) { return s.share_min; })},
      {"kvcached_process_fair_share_bytes",
       "gauge",
       "The process's fair share of the budget now (weighted max-min over what each wants)",
       {},
       Slot([](const auto& s) { return s.fair_share; })},
      {"kvcached_process_share_deficit_bytes",
       "gauge",
       "What the process lacks of its fair share while it is refused (0 when it is not starved)",
       {},
       Slot([](const auto& s) { return s.deficit; })},
      {"kvcached_process_share_given_bytes_total",
       "counter",
       "Bytes the process's engine gave back because the sharing policy asked",
       {},
       Slot([](const auto& s) { return s.share_given; })},
      {"kvcached_process_share_preemptions_total",
       "counter",
       "Requests the process's engine preempted because the sharing policy asked",
       {},
       Slot([](const auto& s) { return s.share_preempted; })},
  };
  return families;
}

void AppendLabels(std::string& out, const Labels& labels) {
  out += '{';
  bool first = true;
  for (const auto& [key, value] : labels) {
    if (!first) out += ',';
    first = false;
    out += key;
    out += "=\"";
    out += EscapeLabelValue(value);
    out += '"';
  }
  out += '}';
}

void AppendSample(std::string& out, const char* name, const Labels& labels,
                  const std::string& value) {
  out += name;
  AppendLabels(out, labels);
  out += ' ';
  out += value;
  out += '\n';
}

}  // namespace

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c >= 0x7f) {
      out += '?';
    } else {
      out += ch;
    }
  }
  return out;
}

std::string RenderMetrics(const std::vector<SegmentEntry>& entries) {
  std::string out;
  for (const Family& f : Families()) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", f.name, f.help, f.name, f.type);
    for (const SegmentEntry& e : entries) {
      if (f.segment) {
        for (SegmentSample& sample : f.segment(e)) {
          Labels labels = {{"segment", e.name}};
          if (e.snapshot) labels.emplace_back("gpu_uuid", e.snapshot->gpu_uuid);
          for (auto& l : sample.extra) labels.push_back(std::move(l));
          AppendSample(out, f.name, labels, sample.value);
        }
        continue;
      }
      if (!e.snapshot) continue;
      for (const ledger::SlotSnapshot& s : e.snapshot->slots) {
        const std::optional<std::string> value = f.process(*e.snapshot, s);
        if (!value) continue;
        // The slot keeps two processes apart that share a pid (other pid namespaces).
        const Labels labels = {{"segment", e.name},
                               {"gpu_uuid", e.snapshot->gpu_uuid},
                               {"slot", Int(s.index)},
                               {"pid", Int(s.pid)},
                               {"label", s.label}};
        AppendSample(out, f.name, labels, *value);
      }
    }
  }
  return out;
}

std::vector<std::string> MetricFamilyNames() {
  std::vector<std::string> names;
  for (const Family& f : Families()) names.emplace_back(f.name);
  return names;
}

}  // namespace kvctl
