// PassthroughTable: the size and device of every allocation the shim passed through to the real
// allocator, by pointer, so that its free can be subtracted from the per-process count
// (Runtime::NotePassthrough). Sits on the hot path of every cudaMalloc/cudaFree pair the engine
// makes outside a KV window, so it is sharded open addressing (linear probing, backward-shift
// deletion, no tombstones) under per-shard spinlocks held for a few dozen instructions. Nothing
// allocates or throws while a shard is locked: a shard's table grows outside its lock, so an
// allocation failure leaves every shard usable.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace kvcached::hooks {

class PassthroughTable {
 public:
  struct Entry {
    std::uint64_t size = 0;
    int device = 0;
  };

  PassthroughTable() = default;
  PassthroughTable(const PassthroughTable&) = delete;
  PassthroughTable& operator=(const PassthroughTable&) = delete;
  PassthroughTable(PassthroughTable&&) = delete;
  PassthroughTable& operator=(PassthroughTable&&) = delete;
  ~PassthroughTable() = default;

  // `ptr` must be non-zero. A pointer already present is overwritten (the real allocator handed
  // the address out again, so the old record was stale). False when the table could not grow
  // (out of host memory): nothing was recorded and the caller must not count the allocation.
  [[nodiscard]] bool Insert(std::uint64_t ptr, Entry entry) noexcept;
  // Removes and returns the record for `ptr`, if any.
  std::optional<Entry> Erase(std::uint64_t ptr) noexcept;
  [[nodiscard]] std::size_t Size() noexcept;

 private:
  struct Slot {
    std::uint64_t key = 0;  // 0 = empty
    std::uint64_t size = 0;
    int device = 0;
  };
  struct alignas(64) Shard {
    std::atomic<bool> locked{false};
    std::vector<Slot> slots;  // power-of-two size, or empty
    std::size_t used = 0;
  };
  static constexpr std::size_t kShards = 64;

  // Holds a shard's spinlock for one scope.
  class ShardLock {
   public:
    explicit ShardLock(Shard& shard) noexcept;
    ~ShardLock();
    ShardLock(const ShardLock&) = delete;
    ShardLock& operator=(const ShardLock&) = delete;
    ShardLock(ShardLock&&) = delete;
    ShardLock& operator=(ShardLock&&) = delete;

   private:
    Shard& shard_;
  };

  static std::uint64_t Hash(std::uint64_t ptr);
  // Stores the record if the shard has room; false when it must grow first.
  static bool TryPlace(Shard& shard, std::uint64_t ptr, std::uint64_t hash, Entry entry);
  static void Place(std::vector<Slot>& slots, const Slot& slot, std::uint64_t hash);

  std::array<Shard, kShards> shards_;
};

// The process's table (built on first use; rebuilt empty in a fork child).
PassthroughTable& Passthroughs();
void ResetPassthroughsAfterFork();

}  // namespace kvcached::hooks
