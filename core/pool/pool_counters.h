// Counters of one device's page pool, read by Runtime::Stats (kvcached_stats).
#pragma once

#include <atomic>
#include <cstdint>

namespace kvcached {

struct PoolCounters {
  std::atomic<std::uint64_t> maps{0};             // pages swapped in (zero -> real)
  std::atomic<std::uint64_t> unmaps{0};           // pages swapped out (real -> zero)
  std::atomic<std::uint64_t> sync_maps{0};        // swaps in done on the caller's thread (a miss)
  std::atomic<std::uint64_t> budget_refusals{0};  // refusals seen by callers (not map-ahead)
  std::atomic<std::uint64_t> physical_bytes{0};   // physical memory charged by this pool
  std::atomic<std::uint64_t> peak_physical_bytes{0};

  void AddPhysical(std::uint64_t bytes) {
    std::uint64_t now = physical_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    std::uint64_t peak = peak_physical_bytes.load(std::memory_order_relaxed);
    while (now > peak &&
           !peak_physical_bytes.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
  }
  void SubPhysical(std::uint64_t bytes) {
    physical_bytes.fetch_sub(bytes, std::memory_order_relaxed);
  }
};

}  // namespace kvcached
