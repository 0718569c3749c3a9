#include "core/ledger/ledger_validate.h"

#include <fmt/core.h>

#include <array>
#include <cstring>

#include "core/ledger/ledger_layout.h"

namespace kvcached::ledger {
namespace {

std::string_view BaseName(std::string_view path) {
  const auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool IsPrintable(const char* text, std::size_t capacity) {
  for (std::size_t i = 0; i < capacity && text[i] != '\0'; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c >= 0x7f) return false;
  }
  return true;
}

Status Bad(std::string_view path, std::string_view reason) {
  return {Errc::kInvalid, SegmentProblem(path, reason)};
}

// Checks one slot copied out of the segment; returns an empty string when it is well-formed.
std::string CheckSlot(const LedgerSlot& s, const SegmentHeader& h) {
  const SlotState state = OwnerState(s.owner);
  if (state == SlotState::kInvalid) return "its owner word has an invalid state";
  if (s.label[kLabelBytes - 1] != '\0') return "its label is not NUL-terminated";
  // 0 is a free slot, or one being claimed (the weight is written just after the owner word).
  if (s.share_weight > kMaxWeightMilli) {
    return fmt::format("its share weight ({} thousandths) exceeds the largest, {}", s.share_weight,
                       kMaxWeightMilli);
  }
  if (s.share_min > h.budget) {
    return fmt::format("its guaranteed minimum ({}) exceeds the budget ({})", s.share_min,
                       h.budget);
  }
  if (state == SlotState::kFree) {
    // A free slot's counters are zeroed before it is freed; non-zero ones would be counted
    // against the budget forever.
    if (s.owner != 0 || s.tentative != 0 || s.charged != 0 || s.in_use != 0) {
      return "it is free but holds counters";
    }
    // Only the owner writes these. (The weight and minimum may be stored by a `kvctl share` that
    // raced with the owner's exit, like the limit: they are bounded below, and reset at claim.)
    if (s.starved_since_ns != 0 || s.starved_last_ns != 0 || s.starved_want != 0 ||
        s.share_preempted != 0 || s.share_given != 0 || s.share_unit != 0) {
      return "it is free but holds a share";
    }
    if (s.engine_steps != 0 || s.engine_hook_ns != 0 || s.engine_hook_c_calls != 0) {
      return "it is free but holds engine step statistics";
    }
    return {};
  }
  if (OwnerPid(s.owner) == 0) return "it is owned by pid 0";
  const std::array<std::uint64_t, 5> counters = {s.tentative, s.charged, s.in_use, s.peak, s.other};
  for (std::uint64_t v : counters) {
    if (v > h.gpu_total)
      return fmt::format("a counter ({}) exceeds the GPU total ({})", v, h.gpu_total);
  }
  if (s.share_unit > h.gpu_total) {
    return fmt::format("its share unit ({}) exceeds the GPU total ({})", s.share_unit, h.gpu_total);
  }
  if (s.starved_want > h.gpu_total) {
    return fmt::format("what it asks for while starved ({}) exceeds the GPU total ({})",
                       s.starved_want, h.gpu_total);
  }
  if (s.limit != kNoLimit && s.limit > h.budget) {
    return fmt::format("its limit ({}) exceeds the budget ({})", s.limit, h.budget);
  }
  return {};
}

}  // namespace

std::string SegmentProblem(std::string_view path, std::string_view reason) {
  return fmt::format(
      "kvcached ledger segment {} cannot be used: {}. Fix: stop the engines that use it and run "
      "`kvctl delete {}` (or `kvctl delete --force`), or set KVCACHED_IPC_NAME to use another "
      "segment",
      path, reason, BaseName(path));
}

Result<SegmentSummary> ValidateSegment(std::span<const std::byte> bytes, std::string_view path) {
  SegmentHeader h{};
  if (bytes.size() < sizeof(h)) {
    return Bad(path, fmt::format("it is {} bytes, smaller than the {}-byte header", bytes.size(),
                                 sizeof(h)));
  }
  std::memcpy(&h, bytes.data(), sizeof(h));
  if (h.magic == 0)
    return Bad(path, "it was never initialised (its creator died while creating it)");
  if (h.magic != kMagic) {
    return Bad(path, fmt::format("it is not a kvcached ledger (magic {:#x})", h.magic));
  }
  if (h.version != kLayoutVersion) {
    return Bad(path, fmt::format("it has layout version {} (made by another kvcached version), "
                                 "this build reads version {} (engines of different kvcached "
                                 "versions cannot share a segment)",
                                 h.version, kLayoutVersion));
  }
  if (h.header_size != sizeof(SegmentHeader) || h.slot_size != sizeof(LedgerSlot)) {
    return Bad(path, fmt::format("its header/slot sizes are {}/{}, expected {}/{}", h.header_size,
                                 h.slot_size, sizeof(SegmentHeader), sizeof(LedgerSlot)));
  }
  if (h.slot_count == 0 || h.slot_count > kMaxSlotCount) {
    return Bad(path,
               fmt::format("its slot count {} is outside 1..{}", h.slot_count, kMaxSlotCount));
  }
  if (bytes.size() < SegmentBytes(h.slot_count)) {
    return Bad(path, fmt::format("it is {} bytes but {} slots need {}", bytes.size(), h.slot_count,
                                 SegmentBytes(h.slot_count)));
  }
  if (h.gpu_total == 0) return Bad(path, "its GPU total is 0");
  if (h.budget == 0 || h.budget > h.gpu_total) {
    return Bad(path, fmt::format("its budget ({}) is not within 1..GPU total ({})", h.budget,
                                 h.gpu_total));
  }
  if (h.flags != 0) return Bad(path, fmt::format("it has unknown flags {:#x}", h.flags));
  if (h.gpu_uuid[kUuidBytes - 1] != '\0' || !IsPrintable(h.gpu_uuid.data(), kUuidBytes)) {
    return Bad(path, "its GPU UUID is not a NUL-terminated printable string");
  }
  if (h.pressure_bytes > h.gpu_total || h.pressure_pid > kMaxPid) {
    return Bad(path, "its pressure request is out of range");
  }
  const std::byte* slots = bytes.data() + sizeof(SegmentHeader);
  for (std::uint32_t i = 0; i < h.slot_count; ++i) {
    LedgerSlot s{};
    std::memcpy(&s, slots + std::size_t{i} * sizeof(LedgerSlot), sizeof(s));
    std::string problem = CheckSlot(s, h);
    if (!problem.empty()) return Bad(path, fmt::format("slot {}: {}", i, problem));
  }
  SegmentSummary out;
  out.slot_count = h.slot_count;
  out.gpu_total = h.gpu_total;
  out.budget = h.budget;
  out.gpu_uuid.assign(h.gpu_uuid.data(), ::strnlen(h.gpu_uuid.data(), kUuidBytes));
  return out;
}

}  // namespace kvcached::ledger
