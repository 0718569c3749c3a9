#include "hooks/passthrough_table.h"

#include "hooks/lazy_global.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvcached::hooks {
namespace {

constexpr std::size_t kInitialSlots = 64;

constinit LazyGlobal<PassthroughTable> g_passthroughs;

inline void CpuRelax() {
#if defined(__x86_64__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

std::uint64_t PassthroughTable::Hash(std::uint64_t ptr) {
  // Device pointers share their low bits (256-byte or larger alignment): mix them all in.
  std::uint64_t x = ptr;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

void PassthroughTable::Lock(Shard& shard) {
  while (shard.locked.exchange(true, std::memory_order_acquire)) {
    while (shard.locked.load(std::memory_order_relaxed)) CpuRelax();
  }
}

void PassthroughTable::Unlock(Shard& shard) {
  shard.locked.store(false, std::memory_order_release);
}

void PassthroughTable::Place(std::vector<Slot>& slots, const Slot& slot, std::uint64_t hash) {
  const std::size_t mask = slots.size() - 1;
  std::size_t i = (hash / kShards) & mask;
  while (slots[i].key != 0) i = (i + 1) & mask;
  slots[i] = slot;
}

void PassthroughTable::Grow(Shard& shard) {
  std::vector<Slot> bigger(shard.slots.empty() ? kInitialSlots : shard.slots.size() * 2);
  for (const Slot& slot : shard.slots) {
    if (slot.key != 0) Place(bigger, slot, Hash(slot.key));
  }
  shard.slots.swap(bigger);
}

void PassthroughTable::Insert(std::uint64_t ptr, Entry entry) {
  const std::uint64_t hash = Hash(ptr);
  Shard& shard = shards_[hash % kShards];
  Lock(shard);
  // Load factor <= 1/2 keeps probe sequences short.
  if ((shard.used + 1) * 2 > shard.slots.size()) Grow(shard);
  const std::size_t mask = shard.slots.size() - 1;
  std::size_t i = (hash / kShards) & mask;
  while (shard.slots[i].key != 0 && shard.slots[i].key != ptr) i = (i + 1) & mask;
  if (shard.slots[i].key == 0) ++shard.used;
  shard.slots[i] = Slot{ptr, entry.size, entry.device};
  Unlock(shard);
}

std::optional<PassthroughTable::Entry> PassthroughTable::Erase(std::uint64_t ptr) {
  const std::uint64_t hash = Hash(ptr);
  Shard& shard = shards_[hash % kShards];
  Lock(shard);
  if (shard.slots.empty()) {
    Unlock(shard);
    return std::nullopt;
  }
  const std::size_t mask = shard.slots.size() - 1;
  std::size_t i = (hash / kShards) & mask;
  while (shard.slots[i].key != 0 && shard.slots[i].key != ptr) i = (i + 1) & mask;
  if (shard.slots[i].key == 0) {
    Unlock(shard);
    return std::nullopt;
  }
  const Entry found{shard.slots[i].size, shard.slots[i].device};
  // Backward-shift deletion: pull later members of the probe run into the hole, so lookups can
  // keep stopping at the first empty slot (no tombstones that would slow them down over time).
  std::size_t hole = i;
  std::size_t j = i;
  for (;;) {
    j = (j + 1) & mask;
    if (shard.slots[j].key == 0) break;
    const std::size_t home = (Hash(shard.slots[j].key) / kShards) & mask;
    // Slot j may move into the hole only if its home is not cyclically inside (hole, j].
    const bool home_in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
    if (!home_in_range) {
      shard.slots[hole] = shard.slots[j];
      hole = j;
    }
  }
  shard.slots[hole] = Slot{};
  --shard.used;
  Unlock(shard);
  return found;
}

std::size_t PassthroughTable::Size() {
  std::size_t total = 0;
  for (Shard& shard : shards_) {
    Lock(shard);
    total += shard.used;
    Unlock(shard);
  }
  return total;
}

PassthroughTable& Passthroughs() {
  return g_passthroughs.Get();
}
void ResetPassthroughsAfterFork() {
  g_passthroughs.ResetAfterFork();
}

}  // namespace kvcached::hooks
