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

PassthroughTable::ShardLock::ShardLock(Shard& shard) noexcept : shard_(shard) {
  while (shard_.locked.exchange(true, std::memory_order_acquire)) {
    while (shard_.locked.load(std::memory_order_relaxed)) CpuRelax();
  }
}

PassthroughTable::ShardLock::~ShardLock() {
  shard_.locked.store(false, std::memory_order_release);
}

void PassthroughTable::Place(std::vector<Slot>& slots, const Slot& slot, std::uint64_t hash) {
  const std::size_t mask = slots.size() - 1;
  std::size_t i = (hash / kShards) & mask;
  while (slots[i].key != 0) i = (i + 1) & mask;
  slots[i] = slot;
}

bool PassthroughTable::TryPlace(Shard& shard, std::uint64_t ptr, std::uint64_t hash, Entry entry) {
  // Load factor <= 1/2 keeps probe sequences short.
  if ((shard.used + 1) * 2 > shard.slots.size()) return false;
  const std::size_t mask = shard.slots.size() - 1;
  std::size_t i = (hash / kShards) & mask;
  while (shard.slots[i].key != 0 && shard.slots[i].key != ptr) i = (i + 1) & mask;
  if (shard.slots[i].key == 0) ++shard.used;
  shard.slots[i] = Slot{ptr, entry.size, entry.device};
  return true;
}

bool PassthroughTable::Insert(std::uint64_t ptr, Entry entry) noexcept {
  const std::uint64_t hash = Hash(ptr);
  Shard& shard = shards_[hash % kShards];
  for (;;) {
    std::size_t old_size = 0;
    {
      const ShardLock lock(shard);
      if (TryPlace(shard, ptr, hash, entry)) return true;
      old_size = shard.slots.size();
    }
    // Grow outside the lock: the allocator may be slow or fail, and neither may hold up (or,
    // through an exception, wedge) the other threads hashing to this shard.
    std::vector<Slot> bigger;
    try {
      bigger.resize(old_size == 0 ? kInitialSlots : old_size * 2);
    } catch (...) {
      return false;
    }
    const ShardLock lock(shard);
    if (shard.slots.size() != old_size) continue;  // another thread grew it meanwhile: retry
    for (const Slot& slot : shard.slots) {
      if (slot.key != 0) Place(bigger, slot, Hash(slot.key));
    }
    shard.slots.swap(bigger);  // the old table is freed after the lock is dropped
    if (TryPlace(shard, ptr, hash, entry)) return true;
  }
}

std::optional<PassthroughTable::Entry> PassthroughTable::Erase(std::uint64_t ptr) noexcept {
  const std::uint64_t hash = Hash(ptr);
  Shard& shard = shards_[hash % kShards];
  const ShardLock lock(shard);
  if (shard.slots.empty()) return std::nullopt;
  const std::size_t mask = shard.slots.size() - 1;
  std::size_t i = (hash / kShards) & mask;
  while (shard.slots[i].key != 0 && shard.slots[i].key != ptr) i = (i + 1) & mask;
  if (shard.slots[i].key == 0) return std::nullopt;
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
  return found;
}

std::size_t PassthroughTable::Size() noexcept {
  std::size_t total = 0;
  for (Shard& shard : shards_) {
    const ShardLock lock(shard);
    total += shard.used;
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
