// Fair shares of one GPU budget between engines (docs/sharing.md). Pure arithmetic: no ledger,
// no driver, no clock; the ledger feeds it a copy of the slots and the time.
//
// Each engine has a weight and an optional guaranteed minimum. Its fair share is its part of a
// weighted max-min (water-filling) allocation of the budget, in which an engine's demand is what
// it holds, or the whole budget while it is starved (refused recently while asking for more): an
// engine using less than its share donates the rest to the others. Minimums come first (scaled
// down together when they add up to more than the budget), and only up to the engine's demand.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace kvcached {

// Weights are in thousandths (1000 = weight 1); 0 reads as the default weight 1.
inline constexpr std::uint64_t kShareWeightScale = 1000;

struct ShareInput {
  std::uint64_t weight_milli = kShareWeightScale;
  std::uint64_t min_bytes = 0;
  std::uint64_t held = 0;              // charged + tentative
  std::uint64_t reserved = 0;          // part of `held` not in use (the pool gives it back itself)
  std::uint64_t starved_since_ns = 0;  // first refusal of the current episode; 0 = not starved
  // The smallest amount the engine takes or gives at a time (a vLLM engine: one page in every KV
  // tensor); 0 = the `granule` of the call (the page size).
  std::uint64_t unit = 0;
  // While starved: what its refused requests since its last grant asked for (the largest), so the
  // others give that, not its
  // whole deficit (a quiet engine asking for one unit must not make a busy one preempt half the
  // budget); 0 = not known: the deficit.
  std::uint64_t want = 0;
};

// An engine's unit: its own, or `granule` (at least 1 byte) when it published none.
std::uint64_t UnitOf(const ShareInput& engine, std::uint64_t granule);

// Each engine's fair share in bytes, in the order of `engines`. What an engine holds beyond whole
// units (held modulo its unit: e.g. a page outside its KV tensors) it can neither give nor add
// to: that stays its own, outside the division. The rest of the budget is divided in whole units,
// each engine's within one of its units of the exact weighted share, never more than the budget
// in all. So a share always differs from what the engine holds by whole units: a starved engine
// can reach it exactly. `granule` is the unit of engines that published none (the page size; 1
// for exact bytes).
std::vector<std::uint64_t> FairShares(std::span<const ShareInput> engines, std::uint64_t budget,
                                      std::uint64_t granule);

// Engine `index`'s fair share if it asked for more now (as if starved): what it may claim. Equal
// to its FairShares entry when it holds at least that much; this is what kvctl shows.
std::uint64_t ShareIfAsking(std::span<const ShareInput> engines, std::size_t index,
                            std::uint64_t budget, std::uint64_t granule);

enum class ShareAction : int {
  kOk = 0,             // below its share, or nobody is starved: nothing to do
  kStopAdmitting = 1,  // at or above its share while a starved engine is below its own: admit
                       // nothing (give_bytes, if any, come back from its pool's spare pages)
  kGiveCached = 2,     // and free cached (prefix) blocks: its pool's spare pages are not enough
  kPreempt = 3,        // the starved engine waited past the bound: preempt own newest requests
};

struct ShareVerdict {
  ShareAction action = ShareAction::kOk;
  std::uint64_t give_bytes = 0;      // what to give back (a multiple of this engine's unit)
  std::uint64_t fair_share = 0;      // this engine's fair share
  std::uint64_t held = 0;            // what it holds
  std::uint64_t others_deficit = 0;  // what the starved engines lack (at most what they asked)
  std::uint64_t starved_ns = 0;      // how long the longest-starved of them has waited
  std::size_t starved_index = 0;     // that engine (valid when others_deficit > 0)
  std::uint64_t weight_milli = kShareWeightScale;  // this engine's weight and minimum
  std::uint64_t min_bytes = 0;
  int starved_pid = 0;  // filled by the ledger (the arithmetic knows no pids)
};

// The verdict for engine `self` at `now_ns`, judged with `self` asking for more too (its
// fair_share is ShareIfAsking's): another engine counts as starved when it was refused
// (starved_since_ns != 0) and lacks at least one of its own units of its fair share. What the
// starved engines lack (others_deficit) is each one's deficit, at most what it asked for (want);
// give_bytes is this engine's part of that less what is free in the budget already (the engines
// above their shares split it in proportion to their excess), in this engine's units, and never
// takes it below its share. `preempt_after_ns` is the bound after which giving back cached
// memory is not enough.
ShareVerdict DecideShare(std::span<const ShareInput> engines, std::size_t self,
                         std::uint64_t budget, std::uint64_t granule, std::uint64_t now_ns,
                         std::uint64_t preempt_after_ns);

const char* ShareActionName(ShareAction action);

}  // namespace kvcached
