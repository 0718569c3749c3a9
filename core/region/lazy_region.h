// LazyRegion: reserved VA whose pages are all aliased to the device's zero page until acquired.
//
// Foreground (engine) calls: Acquire/Release/StateAt/Info. An acquire whose pages are already
// mapped ahead only updates the page table under the region mutex: no driver call. A miss marks
// its ZERO pages busy, drops the mutex, swaps them in (driver calls), and commits; foreground
// calls on other pages of the region are never blocked by driver calls.
// Pool (background) calls: MapAhead, TrimExpired, GiveBackFree, StealFree, RepairHoles.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/driver/handles.h"
#include "core/region/demand_rate.h"
#include "core/region/page_swapper.h"
#include "core/region/page_table.h"
#include "core/region/region.h"

namespace kvcached {

class PagePool;

class LazyRegion final : public Region {
  struct Key {
    explicit Key() = default;
  };

 public:
  // Reserves `size` bytes (rounded up to the page size), aliases every page to the zero memory
  // (in chunks of up to KVCACHED_ZERO_CHUNK_MB, one set-access for the whole range) and
  // registers the region with the pool.
  static Result<std::shared_ptr<LazyRegion>> Create(PagePool& pool, std::uint64_t size);
  LazyRegion(Key key, PagePool& pool, driver::VaReservation va);
  LazyRegion(const LazyRegion&) = delete;
  LazyRegion& operator=(const LazyRegion&) = delete;
  LazyRegion(LazyRegion&&) = delete;
  LazyRegion& operator=(LazyRegion&&) = delete;
  ~LazyRegion() override;

  Status Acquire(std::uint64_t offset, std::uint64_t length, SwappedPages* swapped) override;
  Status Release(std::uint64_t offset, std::uint64_t length) override;
  void Undo(std::uint64_t offset, std::uint64_t length, const SwappedPages& swapped) override;
  [[nodiscard]] Result<PageState> StateAt(std::uint64_t offset) const override;
  [[nodiscard]] std::size_t PagesToBack(std::size_t first_page,
                                        std::size_t end_page) const override;
  [[nodiscard]] RegionInfo Info() const override;
  Status Destroy() override;

  // --- called by the pool ---
  // Pages to keep mapped ahead now: KVCACHED_MAP_AHEAD_PAGES, or more while the engine's recent
  // acquires took more (DemandRate, capped by KVCACHED_MAP_AHEAD_BURST_PAGES).
  [[nodiscard]] std::size_t AheadTarget(std::int64_t now_ns) const;
  // Maps the lowest ZERO pages until `target` pages are MAPPED_FREE (as far as the pool has
  // pages). Returns the first driver error. Does nothing before the region's first acquire (see
  // acquired_once_), nor while it rests.
  Status MapAhead(std::size_t target);
  // Swaps out MAPPED_FREE pages free for at least delay_ns, keeping the `keep` lowest.
  Status TrimExpired(std::int64_t now_ns, std::int64_t delay_ns, std::size_t keep);
  // Swaps out every MAPPED_FREE page that no acquire is using.
  Status GiveBackFree();
  // The engine trimmed it (idle): no map-ahead until its next acquire.
  void Rest();
  // Swaps out up to n MAPPED_FREE pages (highest first) and hands their handles to `out`.
  std::size_t StealFree(std::size_t n, std::vector<driver::PhysicalHandle>& out);
  // Re-aliases pages left without a zero alias by a double driver failure.
  void RepairHoles();
  [[nodiscard]] std::size_t holes() const { return swapper_.holes(); }
  [[nodiscard]] std::size_t mapped_free_pages() const;
  // How many of up to `limit` pages StealFree could take now (mapped ahead, not pinned or busy).
  [[nodiscard]] std::size_t StealablePages(std::size_t limit) const;

 private:
  // Swaps out the pages chosen by `select` (called under the mutex; it appends takeable pages).
  // Handles go to `out` when given, else back to the pool.
  template <class Select>
  Status SwapOutChosen(Select select, std::vector<driver::PhysicalHandle>* out,
                       std::size_t* count = nullptr);
  Status AcquireMiss(std::unique_lock<std::mutex>& lock, std::size_t first, std::size_t end,
                     SwappedPages* swapped);
  [[nodiscard]] std::size_t AheadTargetLocked(std::int64_t now_ns) const;
  // Ends an operation begun under the mutex (Destroy waits for none to be in flight).
  void EndOp(std::unique_lock<std::mutex>& lock);

  PagePool& pool_;
  driver::VaReservation va_;
  // Per page; touched without mu_ only by the thread that marked the page busy.
  std::vector<PageBacking> backing_;
  PageSwapper swapper_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // busy pages cleared / operations ended
  PageTable table_;
  DemandRate demand_;  // pages that became in use, for the map-ahead reserve
  std::size_t ops_in_flight_ = 0;
  // Until the engine first acquires pages here, it may still be writing all over the region (a
  // zero fill of the whole allocation, warm-up and graph capture into blocks it holds none of).
  // Those writes land in the zero aliases, and replacing an alias opens a moment where its VA is
  // unmapped: a kernel writing there then faults the whole context (seen with vLLM on an H200).
  // So map-ahead stays out of a region until its first acquire, and the first swap-in waits for
  // the work queued on the device before it.
  bool acquired_once_ = false;
  // Set by Rest (the engine trimmed its memory when idle), cleared by its next acquire: an idle
  // engine's regions keep no pages mapped ahead.
  bool resting_ = false;
  bool synced_once_ = false;
  bool dead_ = false;
  bool destroyed_ = false;
};

}  // namespace kvcached
