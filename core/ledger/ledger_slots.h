// Slot ownership: claim, release, reclaim of dead owners, labels and limits. Every transition of
// a slot is one CAS on its owner word, and whoever holds the owner word is the only process that
// writes the slot's counters (kvctl only ever stores the `limit` word).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/common/status.h"
#include "core/ledger/ledger_layout.h"
#include "core/ledger/ledger_process.h"
#include "core/ledger/ledger_segment.h"

namespace kvcached::ledger {

// Takes a free slot for `me` (reclaiming dead owners' slots when none is free). The slot starts
// with no limit, zero counters, `label` and a fresh heartbeat.
Result<std::uint32_t> ClaimSlot(Segment& segment, const ProcessIdentity& me,
                                std::string_view label);
// Zeroes the slot and frees it, if `owner_word` still owns it.
void ReleaseSlot(Segment& segment, std::uint32_t index, std::uint64_t owner_word);
// Frees every slot whose owner is dead (their device memory died with them). Returns how many.
// `me` is recorded as the reclaimer while a slot is being zeroed, so that a reclaimer that is
// itself killed midway is reclaimed in turn.
int ReclaimDeadSlots(Segment& segment, const ProcessIdentity& me);

// Labels are stored as 8 atomic words so that readers never see a torn word; the last byte stays
// NUL. Non-printable characters become '?'.
void WriteLabel(LedgerSlot& slot, std::string_view label);
std::string ReadLabel(const LedgerSlot& slot);

// Sets the per-process limit (clamped to the budget; kNoLimit removes it) if the slot still
// belongs to `owner_word`. Returns the value stored.
Result<std::uint64_t> SetSlotLimit(Segment& segment, std::uint32_t index, std::uint64_t owner_word,
                                   std::uint64_t limit);

struct LedgerSums {
  std::uint64_t claimed = 0;  // sum of tentative + charged over all slots
  std::uint64_t charged = 0;  // sum of charged
};
// Reads every non-free slot, tentative before charged (the order the admission proof needs).
LedgerSums SumSlots(const Segment& segment);

}  // namespace kvcached::ledger
