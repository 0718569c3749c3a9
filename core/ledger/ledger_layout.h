// The byte layout of a ledger segment (/dev/shm/kvcached_*): a header followed by one slot per
// process. Plain integers only, so that the layout is trivially copyable (the validator and kvctl
// work on copies) and identical in every process; live processes access the words through
// std::atomic_ref (see ledger_atomics.h). Changing anything here requires a new kLayoutVersion.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace kvcached::ledger {

inline constexpr std::uint64_t kMagic = 0x314752444C43564BULL;  // "KVCLDRG1" little-endian
// 2: activity counters; 3: shares; 4: engine step statistics; 5: share unit; 6: what a starved
// engine asks for, and spare words (all in LedgerSlot); 7: the header's starved_mask. kvctl names a
// segment of another version as such (ledger_validate.h: OtherLayoutVersion), never as corrupt.
inline constexpr std::uint32_t kLayoutVersion = 7;
inline constexpr std::uint32_t kDefaultSlotCount = 64;
inline constexpr std::uint32_t kMaxSlotCount = 4096;
inline constexpr std::size_t kUuidBytes = 64;
inline constexpr std::size_t kLabelBytes = 64;
// A slot limit meaning "only the GPU budget applies".
inline constexpr std::uint64_t kNoLimit = ~std::uint64_t{0};
// Share weights are stored in thousandths (weight 1 = 1000), so that 0.5 or 1.5 need no floats in
// shared memory. 0 in a live slot means "not set yet" and reads as the default weight 1.
inline constexpr std::uint64_t kWeightScale = 1000;
inline constexpr std::uint64_t kDefaultWeightMilli = kWeightScale;
inline constexpr std::uint64_t kMaxWeightMilli = 1000 * kWeightScale;  // weight 1000

struct SegmentHeader {
  std::uint64_t magic;  // written last by the creator (release): the segment is ready
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint32_t slot_count;
  std::uint32_t slot_size;
  std::uint64_t gpu_total;   // bytes of device memory of the GPU this segment governs
  std::uint64_t budget;      // bytes all processes together may hold; fixed by the creator
  std::uint64_t created_ns;  // CLOCK_REALTIME at creation (for kvctl)
  std::uint32_t creator_pid;
  std::uint32_t flags;  // reserved, 0
  // Pressure: bumped by a process that was refused, so that the others give back reserved pages.
  std::uint64_t pressure_seq;
  std::uint64_t pressure_bytes;  // what the last refused process asked for (<= gpu_total)
  std::uint64_t pressure_pid;
  std::uint64_t pressure_ns;              // CLOCK_BOOTTIME of the last request
  std::array<char, kUuidBytes> gpu_uuid;  // NUL-terminated, e.g. "GPU-1a2b3c4d-..."
  // Bit (i % 64) set while slot i may be starving its engine (ledger_share.h: StarvedBits), so
  // that an engine's per-step "is anyone else starved?" reads one word instead of every slot.
  std::uint64_t starved_mask;
  std::array<std::uint8_t, 96> spare;
};

// The owner word packs everything that identifies the single process allowed to write a slot, so
// that one compare-and-swap moves a slot between owners: state (2 bits), pid (22 bits; Linux
// PID_MAX_LIMIT is 2^22) and the process start time in clock ticks since boot (40 bits: 348
// years at 100 Hz). A (pid, start time) pair never names two processes, so a CAS on this word has
// no ABA problem.
enum class SlotState : std::uint8_t { kFree = 0, kLive = 1, kReclaiming = 2, kInvalid = 3 };

inline constexpr std::uint64_t kPidBits = 22;
inline constexpr std::uint64_t kStartBits = 40;
inline constexpr std::uint64_t kMaxPid = (std::uint64_t{1} << kPidBits) - 1;
inline constexpr std::uint64_t kStartMask = (std::uint64_t{1} << kStartBits) - 1;

constexpr std::uint64_t PackOwner(SlotState state, std::uint64_t pid, std::uint64_t start) {
  return (static_cast<std::uint64_t>(state) << 62) | ((pid & kMaxPid) << kStartBits) |
         (start & kStartMask);
}
constexpr SlotState OwnerState(std::uint64_t word) {
  return static_cast<SlotState>(word >> 62);
}
constexpr std::uint64_t OwnerPid(std::uint64_t word) {
  return (word >> kStartBits) & kMaxPid;
}
constexpr std::uint64_t OwnerStart(std::uint64_t word) {
  return word & kStartMask;
}

struct LedgerSlot {
  // First cache line: what every admission reads from every slot.
  std::uint64_t owner;         // PackOwner(...), 0 = free
  std::uint64_t tentative;     // bytes being admitted right now (see ledger_budget.cpp)
  std::uint64_t charged;       // bytes admitted: in_use + reserved
  std::uint64_t limit;         // per-process cap set by kvctl; kNoLimit = the budget only
  std::uint64_t in_use;        // part of `charged` holding engine data
  std::uint64_t peak;          // highest `charged`
  std::uint64_t other;         // bytes passed through to the real allocator (not budgeted)
  std::uint64_t heartbeat_ns;  // CLOCK_BOOTTIME of the owner's last heartbeat
  // Second line: rarely written.
  std::uint64_t pidns;        // inode of the owner's pid namespace (pids only compare within one)
  std::uint64_t attached_ns;  // CLOCK_REALTIME when the owner took the slot
  // Fairness (docs/sharing.md): set by the owner at attach and by `kvctl share` (like `limit`).
  std::uint64_t share_weight;  // thousandths, 0..kMaxWeightMilli (0 = default 1)
  std::uint64_t share_min;     // guaranteed bytes (at most the budget), reclaimed from others
  // Written by the owner only: the episode in which it was refused while below its fair share.
  std::uint64_t starved_since_ns;  // CLOCK_BOOTTIME of the first refusal of the episode, 0 = none
  std::uint64_t starved_last_ns;   // CLOCK_BOOTTIME of the latest refusal of the episode
  std::uint64_t share_preempted;   // requests the owner's engine preempted for the policy
  std::uint64_t share_given;       // bytes the owner's engine gave back for the policy
  std::array<char, kLabelBytes> label;  // NUL-terminated engine name; the last byte is 0
  // Third part of the last line: the owner's page activity since it attached, published by its
  // pool thread with every heartbeat (statistics for `kvctl metrics`; never used for admission).
  std::uint64_t pages_mapped;     // pages swapped in (zero -> real)
  std::uint64_t pages_unmapped;   // pages swapped out (real -> zero)
  std::uint64_t sync_maps;        // of pages_mapped: done on the engine's thread (map-ahead miss)
  std::uint64_t budget_refusals;  // requests the budget refused
  // The engine hook's cumulative totals (kvcached_report_engine_steps), stored as reported: the
  // last report wins. 0/0/0 = never reported. Statistics only, like the activity counters.
  std::uint64_t engine_steps;         // engine steps the hook saw
  std::uint64_t engine_hook_ns;       // wall time spent inside the hook over those steps
  std::uint64_t engine_hook_c_calls;  // kvcached C API calls the hook made over those steps
  // Written by the owner: the smallest amount its engine takes or gives (docs/sharing.md), in
  // bytes, at most the GPU total; 0 = not published (readers use their own page size).
  std::uint64_t share_unit;
  // Fifth line. Written by the owner with starved_last_ns: what its latest refused request for
  // KV pages asked for (bytes, at most the GPU total): the others give no more than this for it.
  // 0 = not known (the whole deficit).
  std::uint64_t starved_want;
  std::array<std::uint64_t, 7> spare;  // 0; for later words without a new layout version
};

static_assert(std::is_trivially_copyable_v<SegmentHeader> &&
              std::is_standard_layout_v<SegmentHeader>);
static_assert(std::is_trivially_copyable_v<LedgerSlot> && std::is_standard_layout_v<LedgerSlot>);
static_assert(sizeof(SegmentHeader) == 256);
static_assert(sizeof(LedgerSlot) == 320);
static_assert(offsetof(LedgerSlot, pidns) == 64 && offsetof(LedgerSlot, label) == 128);
static_assert(offsetof(LedgerSlot, pages_mapped) == 192);
static_assert(offsetof(LedgerSlot, engine_steps) == 224 && offsetof(LedgerSlot, share_unit) == 248);
static_assert(offsetof(LedgerSlot, starved_want) == 256);
static_assert(offsetof(LedgerSlot, share_weight) == 80 && offsetof(LedgerSlot, share_given) == 120);
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free,
              "ledger words must be lock-free: a lock could be held by a killed process");
static_assert(std::atomic_ref<std::uint64_t>::required_alignment <= 8);

constexpr std::size_t SegmentBytes(std::uint32_t slot_count) {
  return sizeof(SegmentHeader) + std::size_t{slot_count} * sizeof(LedgerSlot);
}

}  // namespace kvcached::ledger
