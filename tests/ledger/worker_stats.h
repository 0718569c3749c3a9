// The file through which ledger_worker processes report to the contention and chaos tests. Each
// spawned worker owns one row and is its only writer; the test reads rows while workers run, or
// while they are stopped (SIGSTOP), when rows and ledger slots are a consistent picture.
#pragma once

#include <atomic>
#include <cstdint>

namespace kvcached::ledger::testing {

enum WorkerState : std::uint64_t { kStarting = 0, kRunning = 1, kParked = 2, kDone = 3 };

struct alignas(64) WorkerRow {
  std::uint64_t pid;
  std::uint64_t slot;
  // Bounds of this worker's ledger `charged` at every instant: widened before a ledger call,
  // narrowed after it.
  std::uint64_t lo;
  std::uint64_t hi;
  std::uint64_t held;
  std::uint64_t state;
  std::uint64_t limit;
  std::uint64_t ops;             // ledger calls made
  std::uint64_t charges;         // successful TryCharge
  std::uint64_t refusals;        // refused TryCharge
  std::uint64_t max_latency_ns;  // slowest ledger call
  std::uint64_t total_latency_ns;
  std::uint64_t pressure_signals;
  std::uint64_t shadow;  // this worker's part of StatsHeader::shadow_total
  std::uint64_t pad[2];
};

struct alignas(64) StatsHeader {
  std::uint64_t stop;      // workers finish their current call and park
  std::uint64_t exit_now;  // parked workers release everything and exit
  std::uint64_t rows;
  // A second, test-side account of what is admitted: raised after a successful TryCharge, lowered
  // before Uncharge, so it never exceeds the ledger's true sum; a worker that raises it above the
  // budget has witnessed an over-commit, with no sampling involved.
  std::uint64_t shadow_total;
  std::uint64_t max_shadow;
  std::uint64_t overcommits;
  std::uint64_t pad[2];
};

inline std::atomic_ref<std::uint64_t> Word(std::uint64_t& w) {
  return std::atomic_ref<std::uint64_t>(w);
}

inline std::size_t StatsBytes(std::size_t rows) {
  return sizeof(StatsHeader) + rows * sizeof(WorkerRow);
}

}  // namespace kvcached::ledger::testing
