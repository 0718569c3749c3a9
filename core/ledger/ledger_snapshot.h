// A parsed copy of a live segment, for kvctl and tests: the header, every non-free slot and
// whether its owner is alive (judged from the reading process's point of view).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/common/status.h"
#include "core/ledger/ledger_layout.h"
#include "core/ledger/ledger_segment.h"

namespace kvcached::ledger {

struct SlotSnapshot {
  std::uint32_t index = 0;
  SlotState state = SlotState::kFree;
  std::uint64_t pid = 0;
  std::uint64_t start_ticks = 0;
  std::uint64_t owner_word = 0;
  std::uint64_t pidns = 0;
  std::uint64_t limit = kNoLimit;
  std::uint64_t tentative = 0;
  std::uint64_t charged = 0;
  std::uint64_t in_use = 0;
  std::uint64_t reserved = 0;  // charged - in_use (never negative)
  std::uint64_t peak = 0;
  std::uint64_t other = 0;
  std::uint64_t heartbeat_ns = 0;  // CLOCK_BOOTTIME
  std::uint64_t attached_ns = 0;   // CLOCK_REALTIME
  std::uint64_t pages_mapped = 0;  // the owner's page activity (LedgerSlot)
  std::uint64_t pages_unmapped = 0;
  std::uint64_t sync_maps = 0;
  std::uint64_t budget_refusals = 0;
  // The engine hook's totals (kvcached_report_engine_steps); engine_reported is false while all
  // three are 0 (the engine never reported: kvctl shows them as unknown).
  std::uint64_t engine_steps = 0;
  std::uint64_t engine_hook_ns = 0;
  std::uint64_t engine_hook_c_calls = 0;
  bool engine_reported = false;
  std::uint64_t weight_milli = kDefaultWeightMilli;  // share (docs/sharing.md)
  std::uint64_t share_min = 0;
  std::uint64_t share_unit = 0;        // the engine's unit (bytes; 0 = not published)
  std::uint64_t starved_since_ns = 0;  // CLOCK_BOOTTIME; 0 unless starved now (fresh refusal)
  std::uint64_t share_preempted = 0;
  std::uint64_t share_given = 0;
  std::uint64_t fair_share = 0;  // among the live slots, if it asked for more now (in its units)
  std::uint64_t deficit = 0;     // fair_share - held while starved, else 0
  std::string label;
  bool dead = false;         // owner gone (the slot awaits reclamation)
  bool other_pidns = false;  // owner in another pid namespace (pid is not ours to look up)
};

struct SegmentSnapshot {
  std::string name;
  std::string gpu_uuid;
  std::uint64_t gpu_total = 0;
  std::uint64_t budget = 0;
  std::uint32_t slot_count = 0;
  std::uint64_t created_ns = 0;
  std::uint64_t pressure_seq = 0;
  std::uint64_t pressure_bytes = 0;
  std::uint64_t pressure_pid = 0;
  std::uint64_t charged = 0;  // sums over all non-free slots
  std::uint64_t in_use = 0;
  std::uint64_t reserved = 0;
  std::uint64_t tentative = 0;
  std::uint32_t live = 0;
  std::uint32_t dead = 0;
  std::vector<SlotSnapshot> slots;  // non-free slots, by index
};

// Copies and parses `segment` (which was validated when opened); liveness uses this process's
// pid namespace and clock.
SegmentSnapshot TakeSnapshot(const Segment& segment);

}  // namespace kvcached::ledger
