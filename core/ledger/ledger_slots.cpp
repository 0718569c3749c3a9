#include "core/ledger/ledger_slots.h"

#include <fmt/core.h>

#include <array>
#include <cstring>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_share.h"
#include "core/ledger/ledger_validate.h"

namespace kvcached::ledger {
namespace {

void ZeroShare(LedgerSlot& s) {
  Atomic(s.share_weight).store(0, std::memory_order_relaxed);
  Atomic(s.share_min).store(0, std::memory_order_relaxed);
  Atomic(s.starved_since_ns).store(0, std::memory_order_relaxed);
  Atomic(s.starved_last_ns).store(0, std::memory_order_relaxed);
  Atomic(s.starved_want).store(0, std::memory_order_relaxed);
  Atomic(s.share_preempted).store(0, std::memory_order_relaxed);
  Atomic(s.share_given).store(0, std::memory_order_relaxed);
  Atomic(s.share_unit).store(0, std::memory_order_relaxed);
}

void ZeroActivity(LedgerSlot& s) {
  Atomic(s.pages_mapped).store(0, std::memory_order_relaxed);
  Atomic(s.pages_unmapped).store(0, std::memory_order_relaxed);
  Atomic(s.sync_maps).store(0, std::memory_order_relaxed);
  Atomic(s.budget_refusals).store(0, std::memory_order_relaxed);
}

void ZeroEngineSteps(LedgerSlot& s) {
  Atomic(s.engine_steps).store(0, std::memory_order_relaxed);
  Atomic(s.engine_hook_ns).store(0, std::memory_order_relaxed);
  Atomic(s.engine_hook_c_calls).store(0, std::memory_order_relaxed);
}

void ZeroSlot(LedgerSlot& s) {
  // Counters first: the slot must hold nothing before it is seen free (the validator and the
  // admission sum both rely on "free implies zero").
  Atomic(s.tentative).store(0);
  Atomic(s.charged).store(0);
  Atomic(s.in_use).store(0);
  Atomic(s.peak).store(0);
  Atomic(s.other).store(0);
  Atomic(s.limit).store(0);
  Atomic(s.heartbeat_ns).store(0);
  Atomic(s.pidns).store(0);
  Atomic(s.attached_ns).store(0);
  ZeroActivity(s);
  ZeroEngineSteps(s);
  ZeroShare(s);
  WriteLabel(s, {});
}

}  // namespace

void WriteLabel(LedgerSlot& slot, std::string_view label) {
  std::array<std::uint64_t, kLabelBytes / 8> words{};
  char* text = reinterpret_cast<char*>(words.data());
  const std::size_t n = std::min(label.size(), kLabelBytes - 1);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(label[i]);
    text[i] = (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  auto* dst = reinterpret_cast<std::uint64_t*>(slot.label.data());
  for (std::size_t i = 0; i < kLabelBytes / 8; ++i)
    Atomic(dst[i]).store(words[i], std::memory_order_relaxed);
}

std::string ReadLabel(const LedgerSlot& slot) {
  std::array<std::uint64_t, kLabelBytes / 8> words{};
  CopyWords(words.data(), slot.label.data(), kLabelBytes);
  const char* text = reinterpret_cast<const char*>(words.data());
  return {text, ::strnlen(text, kLabelBytes - 1)};
}

Result<std::uint32_t> ClaimSlot(Segment& segment, const ProcessIdentity& me,
                                std::string_view label) {
  const std::uint64_t mine = PackOwner(SlotState::kLive, me.pid, me.start_ticks);
  for (int round = 0; round < 2; ++round) {
    for (std::uint32_t i = 0; i < segment.slot_count(); ++i) {
      LedgerSlot& s = segment.slot(i);
      std::uint64_t expected = 0;
      if (Load(s.owner) != 0 || !Atomic(s.owner).compare_exchange_strong(expected, mine)) continue;
      // Ours now: nobody else writes these words until we free the slot.
      Atomic(s.tentative).store(0);
      Atomic(s.charged).store(0);
      Atomic(s.in_use).store(0);
      Atomic(s.peak).store(0);
      Atomic(s.other).store(0);
      Atomic(s.limit).store(kNoLimit);
      Atomic(s.pidns).store(me.pidns);
      Atomic(s.attached_ns).store(RealtimeNs());
      Atomic(s.heartbeat_ns).store(BoottimeNs());
      ZeroActivity(s);
      ZeroEngineSteps(s);
      ZeroShare(s);
      ClearStarvedBit(segment, i);  // a bit left by a process that died starving in this slot
      Atomic(s.share_weight).store(kDefaultWeightMilli, std::memory_order_relaxed);
      WriteLabel(s, label);
      return i;
    }
    if (ReclaimDeadSlots(segment, me) == 0) break;
  }
  // No free slot: a full table of live processes, or bytes that are not a ledger any more (a
  // segment overwritten with garbage has "owners" in every slot). Say which.
  const std::vector<std::byte> bytes = segment.Copy();
  if (auto valid = ValidateSegment(bytes, segment.path()); !valid.ok()) return valid.status();
  return Status(Errc::kNoMemory,
                fmt::format("all {} slots of {} are held by live processes (see `kvctl watch {}`)",
                            segment.slot_count(), segment.path(), segment.name()));
}

void ReleaseSlot(Segment& segment, std::uint32_t index, std::uint64_t owner_word) {
  LedgerSlot& s = segment.slot(index);
  if (Load(s.owner) != owner_word) return;  // reclaimed already (we were judged dead)
  ZeroSlot(s);
  ClearStarvedBit(segment, index);
  std::uint64_t expected = owner_word;
  Atomic(s.owner).compare_exchange_strong(expected, 0);
}

int ReclaimDeadSlots(Segment& segment, const ProcessIdentity& me) {
  const std::uint64_t now = BoottimeNs();
  const std::uint64_t reclaimer = PackOwner(SlotState::kReclaiming, me.pid, me.start_ticks);
  int reclaimed = 0;
  for (std::uint32_t i = 0; i < segment.slot_count(); ++i) {
    LedgerSlot& s = segment.slot(i);
    std::uint64_t owner = Load(s.owner);
    if (owner == 0 || owner == reclaimer) continue;
    if (OwnerPid(owner) == me.pid && OwnerStart(owner) == me.start_ticks) continue;
    if (!OwnerIsDead(owner, Load(s.pidns), Load(s.heartbeat_ns), me.pidns, now)) continue;
    // The CAS makes exactly one reclaimer the slot's writer; (pid, start) names one process, so
    // the owner word cannot have come back to the same value in between.
    if (!Atomic(s.owner).compare_exchange_strong(owner, reclaimer)) continue;
    ZeroSlot(s);
    ClearStarvedBit(segment, i);
    Atomic(s.owner).store(0);
    ++reclaimed;
  }
  return reclaimed;
}

Result<std::uint64_t> SetSlotLimit(Segment& segment, std::uint32_t index, std::uint64_t owner_word,
                                   std::uint64_t limit) {
  if (!segment.writable()) {
    return Status(Errc::kInvalid, fmt::format("{} is open read-only", segment.path()));
  }
  if (index >= segment.slot_count()) {
    return Status(Errc::kInvalid,
                  fmt::format("slot {} does not exist in {}", index, segment.path()));
  }
  LedgerSlot& s = segment.slot(index);
  const std::uint64_t value = limit == kNoLimit ? kNoLimit : std::min(limit, segment.budget());
  if (Load(s.owner) != owner_word) {
    return Status(Errc::kNotFound,
                  fmt::format("the process in slot {} of {} has exited", index, segment.path()));
  }
  Atomic(s.limit).store(value);
  if (Load(s.owner) != owner_word) {
    return Status(Errc::kNotFound, fmt::format("the process in slot {} of {} exited while its "
                                               "limit was being set",
                                               index, segment.path()));
  }
  return value;
}

LedgerSums SumSlots(const Segment& segment) {
  LedgerSums sums;
  for (std::uint32_t i = 0; i < segment.slot_count(); ++i) {
    const LedgerSlot& s = segment.slot(i);
    if (Load(s.owner) == 0) continue;  // free implies zero (see ledger_budget.cpp)
    const std::uint64_t tentative = Load(s.tentative);
    const std::uint64_t charged = Load(s.charged);
    sums.claimed = SatAdd(sums.claimed, SatAdd(tentative, charged));
    sums.charged = SatAdd(sums.charged, charged);
  }
  return sums;
}

}  // namespace kvcached::ledger
