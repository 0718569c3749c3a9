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
// Set in `starved_last_ns` when the engine's latest request for KV pages was granted: it is not
// being refused now (nobody is asked to give for it), but a refusal within kStarvedFreshNs
// continues the episode, so the preemption bound still counts from its first refusal. Boot times
// stay below 2^63 ns (292 years).
inline constexpr std::uint64_t kServedBit = std::uint64_t{1} << 63U;

// Whether an episode with these words goes on at `now_ns`: its latest refusal, or the grant
// that followed it, is fresh.
constexpr bool EpisodeOpen(std::uint64_t since, std::uint64_t last, std::uint64_t now_ns) {
  const std::uint64_t at = last & ~kServedBit;
  return since != 0 && at >= since && now_ns - (now_ns < at ? now_ns : at) <= kStarvedFreshNs;
}

// Whether it is starving its engine at `now_ns`: the episode goes on and nothing was granted
// since its latest refusal.
constexpr bool StarvedNow(std::uint64_t since, std::uint64_t last, std::uint64_t now_ns) {
  return (last & kServedBit) == 0 && EpisodeOpen(since, last, now_ns);
}

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

// Called by the owner of slot `index` when the budget refused it: opens (or continues: the last
// refusal or grant of the episode is fresh) its starvation episode when it is below its fair
// share (as a starved engine), ends it otherwise. `asked_bytes` is what the refused request
// asked for: the others give no more than the largest request refused since the engine's last
// grant (0 = not known). Returns true when the engine is starved.
bool RecordRefusal(Segment& segment, std::uint32_t index, std::uint64_t granule,
                   std::uint64_t now_ns, std::uint64_t asked_bytes = 0);

// Called by the owner of slot `index` when a request of its engine for KV pages was granted
// during an episode: not starved now (kServedBit), the episode's start kept.
void RecordServed(Segment& segment, std::uint32_t index, std::uint64_t now_ns);

// Whether a live slot other than `index` is starving its engine at `now_ns`: when none is, the
// verdict for `index` is kOk whatever the shares are (only a starved engine is given to), and an
// engine can learn that without the fair-share arithmetic: one read of the header's
// starved_mask while nobody starves, else one pass over the slots its bits name.
bool OthersStarved(const Segment& segment, std::uint32_t index, std::uint64_t now_ns);

// The header's starved_mask (invariant: a slot that is starving its engine has its bit set; a set
// bit may be stale, which costs a reader a look at the slot, never a wrong answer). Bit i % 64
// names slot i: with more than 64 slots a bit is shared, and clearing it puts it back when another
// slot of that bit still has an episode. Set by the owner before its episode is published
// (RecordRefusal), cleared when its engine is served or refused at its share, and when its slot
// is freed or reclaimed.
void SetStarvedBit(Segment& segment, std::uint32_t index);
void ClearStarvedBit(Segment& segment, std::uint32_t index);

// The policy's verdict for the owner of slot `index`.
ShareVerdict VerdictFor(const Segment& segment, std::uint32_t index, std::uint64_t granule,
                        std::uint64_t now_ns, std::uint64_t preempt_after_ns);

}  // namespace kvcached::ledger
