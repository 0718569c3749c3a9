// The background pass of PagePool: pressure, heartbeat, hole repair, deferred trim, map-ahead
// and the reserve of unmapped pages. Runs on the "kvcached-pool" thread only.
#include <vector>

#include "core/common/clock.h"
#include "core/pool/page_pool.h"
#include "core/region/lazy_region.h"

namespace kvcached {

void PagePool::MaintenancePass() {
  // Another process was refused: give back everything not in use (within one period).
  if (budget_.TakePressureSignal()) (void)GiveBackAll();
  budget_.Heartbeat();
  budget_.PublishActivity({counters_.maps.load(std::memory_order_relaxed),
                           counters_.unmaps.load(std::memory_order_relaxed),
                           counters_.sync_maps.load(std::memory_order_relaxed),
                           counters_.budget_refusals.load(std::memory_order_relaxed)});

  auto regions = Snapshot();
  const std::int64_t now = NowNs();
  const bool held = holding();
  const std::int64_t delay_ns = static_cast<std::int64_t>(config_.trim_delay_ms) * 1'000'000;

  for (const auto& region : regions) region->RepairHoles();
  // Each region's map-ahead reserve (it follows the region's recent demand): trimming keeps it,
  // map-ahead refills it; while holding, map-ahead pages are not kept either.
  std::vector<std::size_t> reserve(regions.size(), 0);
  for (std::size_t i = 0; i < regions.size(); ++i) {
    if (!held) reserve[i] = regions[i]->AheadTarget(now);
    (void)regions[i]->TrimExpired(now, delay_ns, reserve[i]);
  }
  if (held) {
    ReleaseFreeList();
    return;
  }
  if (foreground_busy()) return;  // EndForeground wakes us to finish
  for (std::size_t i = 0; i < regions.size(); ++i) (void)regions[i]->MapAhead(reserve[i]);
  RefillFreeList();
}

void PagePool::RefillFreeList() {
  if (!config_.page_prealloc) return;
  const std::size_t target = std::min(config_.min_reserved_pages, config_.max_reserved_pages);
  while (free_pages() < target && !foreground_busy()) {
    auto handle = CreateHandle();
    if (!handle.ok()) return;  // budget or driver: try again next pass
    std::lock_guard<std::mutex> lock(free_mu_);
    free_.push_back(std::move(handle).value());
  }
}

}  // namespace kvcached
