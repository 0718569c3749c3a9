#include "core/ledger/ledger_share.h"

#include <fmt/core.h>

#include <algorithm>
#include <atomic>
#include <bit>

#include "core/ledger/ledger_atomics.h"

namespace kvcached::ledger {
namespace {

std::size_t Position(const std::vector<std::uint32_t>& indices, std::uint32_t index) {
  return static_cast<std::size_t>(std::find(indices.begin(), indices.end(), index) -
                                  indices.begin());
}

constexpr std::uint32_t kMaskBits = 64;

constexpr std::uint64_t StarvedBit(std::uint32_t index) {
  return std::uint64_t{1} << (index % kMaskBits);
}

bool StarvedSlotOthers(const Segment& segment, std::uint32_t index, std::uint32_t first,
                       std::uint64_t now_ns) {
  for (std::uint32_t i = first; i < segment.slot_count(); i += kMaskBits) {
    if (i == index) continue;
    const LedgerSlot& s = segment.slot(i);
    const std::uint64_t since = LoadRelaxed(s.starved_since_ns);
    if (since == 0) continue;
    const std::uint64_t owner = Load(s.owner);
    if (owner == 0 || OwnerState(owner) != SlotState::kLive) continue;
    if (StarvedNow(since, LoadRelaxed(s.starved_last_ns), now_ns)) return true;
  }
  return false;
}

}  // namespace

Result<ShareSetting> SetSlotShare(Segment& segment, std::uint32_t index, std::uint64_t owner_word,
                                  std::optional<std::uint64_t> weight_milli,
                                  std::optional<std::uint64_t> min_bytes) {
  if (!segment.writable()) {
    return Status(Errc::kInvalid, fmt::format("{} is open read-only", segment.path()));
  }
  if (index >= segment.slot_count()) {
    return Status(Errc::kInvalid,
                  fmt::format("slot {} does not exist in {}", index, segment.path()));
  }
  if (weight_milli && (*weight_milli == 0 || *weight_milli > kMaxWeightMilli)) {
    return Status(Errc::kInvalid, fmt::format("weight {:.3f} is outside 0.001..{}",
                                              static_cast<double>(*weight_milli) / 1000.0,
                                              kMaxWeightMilli / kWeightScale));
  }
  LedgerSlot& s = segment.slot(index);
  if (Load(s.owner) != owner_word) {
    return Status(Errc::kNotFound,
                  fmt::format("the process in slot {} of {} has exited", index, segment.path()));
  }
  if (weight_milli) Atomic(s.share_weight).store(*weight_milli);
  if (min_bytes) Atomic(s.share_min).store(std::min(*min_bytes, segment.budget()));
  ShareSetting out{Load(s.share_weight), Load(s.share_min)};
  if (out.weight_milli == 0) out.weight_milli = kDefaultWeightMilli;
  if (Load(s.owner) != owner_word) {
    return Status(Errc::kNotFound, fmt::format("the process in slot {} of {} exited while its "
                                               "share was being set",
                                               index, segment.path()));
  }
  return out;
}

Status SetSlotShareUnit(Segment& segment, std::uint32_t index, std::uint64_t owner_word,
                        std::uint64_t unit_bytes) {
  if (!segment.writable()) {
    return {Errc::kInvalid, fmt::format("{} is open read-only", segment.path())};
  }
  if (index >= segment.slot_count()) {
    return {Errc::kInvalid, fmt::format("slot {} does not exist in {}", index, segment.path())};
  }
  if (unit_bytes > segment.budget()) {
    return {Errc::kInvalid,
            fmt::format("a share unit of {} bytes exceeds the GPU budget of {} bytes ({}): "
                        "the engine could never take one; give a smaller unit",
                        unit_bytes, segment.budget(), segment.path())};
  }
  LedgerSlot& s = segment.slot(index);
  if (Load(s.owner) != owner_word) {
    return {Errc::kNotFound,
            fmt::format("the process in slot {} of {} has exited", index, segment.path())};
  }
  Atomic(s.share_unit).store(unit_bytes, std::memory_order_relaxed);
  return Status::Ok();
}

std::vector<ShareInput> ReadShareInputs(const Segment& segment, std::uint64_t now_ns,
                                        std::vector<std::uint32_t>* indices) {
  std::vector<ShareInput> out;
  for (std::uint32_t i = 0; i < segment.slot_count(); ++i) {
    const LedgerSlot& s = segment.slot(i);
    const std::uint64_t owner = Load(s.owner);
    if (owner == 0 || OwnerState(owner) != SlotState::kLive) continue;
    ShareInput in;
    in.weight_milli = std::min(LoadRelaxed(s.share_weight), kMaxWeightMilli);
    in.min_bytes = std::min(LoadRelaxed(s.share_min), segment.budget());
    const std::uint64_t charged = Load(s.charged);
    const std::uint64_t in_use = LoadRelaxed(s.in_use);
    in.held = SatAdd(Load(s.tentative), charged);
    // Tolerant: a unit larger than the budget reads as the budget (0: the reader's granule).
    in.unit = std::min(LoadRelaxed(s.share_unit), segment.budget());
    in.reserved = charged > in_use ? charged - in_use : 0;
    const std::uint64_t since = LoadRelaxed(s.starved_since_ns);
    if (StarvedNow(since, LoadRelaxed(s.starved_last_ns), now_ns)) {
      in.starved_since_ns = since;
      in.want = std::min(LoadRelaxed(s.starved_want), segment.gpu_total());
    }
    out.push_back(in);
    if (indices != nullptr) indices->push_back(i);
  }
  return out;
}

bool RecordRefusal(Segment& segment, std::uint32_t index, std::uint64_t granule,
                   std::uint64_t now_ns, std::uint64_t asked_bytes) {
  std::vector<std::uint32_t> indices;
  std::vector<ShareInput> inputs = ReadShareInputs(segment, now_ns, &indices);
  const std::size_t self = Position(indices, index);
  if (self >= inputs.size()) return false;
  // As a starved engine (it asked for more and was refused): is it below the share it would get?
  const LedgerSlot& own = segment.slot(index);
  const std::uint64_t raw_since = LoadRelaxed(own.starved_since_ns);
  const std::uint64_t last = LoadRelaxed(own.starved_last_ns);
  // What it asks for: the largest request refused since its last grant (an engine's step asks
  // for all it could admit, then for one request at a time; the step's worth is what it lacks).
  const bool unserved = StarvedNow(raw_since, last, now_ns);
  const std::uint64_t want =
      std::min(unserved ? std::max(asked_bytes, LoadRelaxed(own.starved_want)) : asked_bytes,
               segment.gpu_total());
  const std::uint64_t fresh_since = EpisodeOpen(raw_since, last, now_ns) ? raw_since : 0;
  inputs[self].starved_since_ns = fresh_since != 0 ? fresh_since : now_ns;
  const std::vector<std::uint64_t> shares = FairShares(inputs, segment.budget(), granule);
  const std::uint64_t unit = UnitOf(inputs[self], granule);
  LedgerSlot& s = segment.slot(index);
  // Starved only while it lacks at least one of its own units (less it could not use).
  const bool below = shares[self] >= inputs[self].held && shares[self] - inputs[self].held >= unit;
  if (!below) {
    // Refused at or above its share: its own business (it waits like anyone over its share).
    Atomic(s.starved_since_ns).store(0, std::memory_order_relaxed);
    Atomic(s.starved_last_ns).store(0, std::memory_order_relaxed);
    Atomic(s.starved_want).store(0, std::memory_order_relaxed);
    ClearStarvedBit(segment, index);
    return false;
  }
  SetStarvedBit(segment, index);  // before the episode is visible (starved_mask's invariant)
  // The episode's start is kept while refusals keep coming, so the preemption bound is measured
  // from the first refusal.
  if (fresh_since == 0) Atomic(s.starved_since_ns).store(now_ns, std::memory_order_relaxed);
  Atomic(s.starved_want).store(want, std::memory_order_relaxed);
  Atomic(s.starved_last_ns).store(now_ns, std::memory_order_relaxed);
  return true;
}

void RecordServed(Segment& segment, std::uint32_t index, std::uint64_t now_ns) {
  LedgerSlot& s = segment.slot(index);
  if (LoadRelaxed(s.starved_since_ns) == 0) return;
  Atomic(s.starved_last_ns).store(now_ns | kServedBit, std::memory_order_relaxed);
  ClearStarvedBit(segment, index);  // not starving now; a later refusal below its share sets it
}

void SetStarvedBit(Segment& segment, std::uint32_t index) {
  std::atomic_ref<std::uint64_t> mask = Atomic(segment.header().starved_mask);
  const std::uint64_t bit = StarvedBit(index);
  if ((mask.load(std::memory_order_relaxed) & bit) == 0) mask.fetch_or(bit);
}

void ClearStarvedBit(Segment& segment, std::uint32_t index) {
  std::atomic_ref<std::uint64_t> mask = Atomic(segment.header().starved_mask);
  const std::uint64_t bit = StarvedBit(index);
  if ((mask.load(std::memory_order_relaxed) & bit) == 0) return;
  mask.fetch_and(~bit);
  // Another slot of the same bit (more than 64 slots) with an episode keeps it: put it back. A
  // slot that publishes its episode meanwhile sets it again at its next refusal.
  for (std::uint32_t i = index % kMaskBits; i < segment.slot_count(); i += kMaskBits) {
    if (i != index && LoadRelaxed(segment.slot(i).starved_since_ns) != 0) {
      mask.fetch_or(bit);
      return;
    }
  }
}

bool OthersStarved(const Segment& segment, std::uint32_t index, std::uint64_t now_ns) {
  // The common case: nobody starving, one load of the header (the slots stay out of the caches).
  std::uint64_t mask = Load(segment.header().starved_mask);
  if (segment.slot_count() <= kMaskBits) mask &= ~StarvedBit(index);  // its bit is its own
  while (mask != 0) {
    const auto first = static_cast<std::uint32_t>(std::countr_zero(mask));
    if (StarvedSlotOthers(segment, index, first, now_ns)) return true;
    mask &= mask - 1;
  }
  return false;
}

ShareVerdict VerdictFor(const Segment& segment, std::uint32_t index, std::uint64_t granule,
                        std::uint64_t now_ns, std::uint64_t preempt_after_ns) {
  std::vector<std::uint32_t> indices;
  const std::vector<ShareInput> inputs = ReadShareInputs(segment, now_ns, &indices);
  const std::size_t self = Position(indices, index);
  if (self >= inputs.size()) return {};
  ShareVerdict v = DecideShare(inputs, self, segment.budget(), granule, now_ns, preempt_after_ns);
  if (v.others_deficit > 0) {
    v.starved_pid = static_cast<int>(OwnerPid(Load(segment.slot(indices[v.starved_index]).owner)));
  }
  return v;
}

}  // namespace kvcached::ledger
