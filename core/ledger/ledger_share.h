// The fairness words of the ledger slots (docs/sharing.md): weights and minimums (set by the
// owner at attach and by `kvctl share`), and the starvation episode of each engine (written by
// the owner when it is refused). The arithmetic is in core/budget/fair_share.h.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/budget/fair_share.h"
#include "core/common/status.h"
#include "core/ledger/ledger_segment.h"

namespace kvcached::ledger {

// A refusal older than this ends the engine's starvation episode: an engine that stopped asking
// is not starved any more, whatever it holds.
inline constexpr std::uint64_t kStarvedFreshNs = 1'000'000'000;

struct ShareSetting {
  std::uint64_t weight_milli = kDefaultWeightMilli;
  std::uint64_t min_bytes = 0;
};

// Stores a weight (thousandths, 1..kMaxWeightMilli) and/or a minimum (clamped to the budget) in
// slot `index` if it still belongs to `owner_word`. Returns what is stored now.
Result<ShareSetting> SetSlotShare(Segment& segment, std::uint32_t index, std::uint64_t owner_word,
                                  std::optional<std::uint64_t> weight_milli,
                                  std::optional<std::uint64_t> min_bytes);

// Stores the engine's share unit (bytes, at most the budget; 0 = the page size) in slot `index`
// if it still belongs to `owner_word`.
Status SetSlotShareUnit(Segment& segment, std::uint32_t index, std::uint64_t owner_word,
                        std::uint64_t unit_bytes);

// The live slots as inputs of the policy, at `now_ns` (CLOCK_BOOTTIME): held = tentative +
// charged; an episode counts only while its last refusal is fresh; units as published (0: none).
// `indices` (optional) gets the slot index of each input.
std::vector<ShareInput> ReadShareInputs(const Segment& segment, std::uint64_t now_ns,
                                        std::vector<std::uint32_t>* indices = nullptr);

// Called by the owner of slot `index` when the budget refused it: opens (or continues) its
// starvation episode when it is below its fair share (as a starved engine), ends it otherwise.
// Returns true when the engine is starved.
bool RecordRefusal(Segment& segment, std::uint32_t index, std::uint64_t granule,
                   std::uint64_t now_ns);

// The policy's verdict for the owner of slot `index`.
ShareVerdict VerdictFor(const Segment& segment, std::uint32_t index, std::uint64_t granule,
                        std::uint64_t now_ns, std::uint64_t preempt_after_ns);

}  // namespace kvcached::ledger
