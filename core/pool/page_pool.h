// PagePool: one per device. Owns the zero page, a free list of unmapped physical pages and the
// background thread that keeps lazy regions warm (map-ahead), trims pages released long ago
// (deferred trim), keeps the free list between KVCACHED_MIN/MAX_RESERVED_PAGES, and gives
// everything reserved back under pressure. Every physical byte goes through the Budget.
#pragma once

#include <cuda.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/budget/budget.h"
#include "core/common/status.h"
#include "core/config/config.h"
#include "core/driver/handles.h"
#include "core/pool/background_worker.h"
#include "core/pool/pool_counters.h"
#include "core/pool/zero_page.h"

namespace kvcached {

class LazyRegion;

class PagePool {
 public:
  // How long map-ahead and pre-allocation stay off after a give-back (pressure or Trim), so that
  // memory just returned is not taken again at once. A foreground miss ends the hold early: the
  // engine needs memory again.
  static constexpr std::int64_t kHoldNs = 1'000'000'000;
  // The worker's longest sleep between passes.
  static constexpr std::chrono::milliseconds kPeriod{20};

  PagePool(const driver::Driver& driver, Config config, int ordinal, CUdevice device, CUcontext ctx,
           Budget& budget);
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;
  PagePool(PagePool&&) = delete;
  PagePool& operator=(PagePool&&) = delete;
  // Stops the worker and releases the free list and the zero page. Regions must be gone.
  ~PagePool();

  [[nodiscard]] const driver::Driver& driver() const { return driver_; }
  [[nodiscard]] const Config& config() const { return config_; }
  [[nodiscard]] int ordinal() const { return ordinal_; }
  [[nodiscard]] CUdevice cu_device() const { return device_; }
  [[nodiscard]] CUcontext context() const { return ctx_; }
  [[nodiscard]] std::size_t page_size() const { return page_size_; }
  [[nodiscard]] Budget& budget() { return budget_; }
  [[nodiscard]] PoolCounters& counters() { return counters_; }

  // --- lazy regions ---
  // Creates the zero page and starts the worker (once). Called before a lazy region is made.
  Status EnsureLazyReady();
  // The zero handles, [level] = 2^level pages (valid once EnsureLazyReady succeeded).
  [[nodiscard]] std::vector<CUmemGenericAllocationHandle> zero_handles() const {
    return zero_->handles();
  }
  void Register(const std::shared_ptr<LazyRegion>& region);
  void Unregister(const LazyRegion* region);

  // --- physical pages (each page_size bytes, charged as reserved) ---
  enum class Mode {
    kForeground,  // an engine call: on refusal, steal mapped-ahead pages, then ask for pressure
    kBackground,  // map-ahead: take what is available, quietly
  };
  // Appends n handles to `out`: free list first, then new pages. On failure `out` may hold some
  // (the caller gives them back with GiveHandles). A foreground refusal by the budget creates,
  // maps and unmaps nothing.
  Status TakeHandles(std::size_t n, std::vector<driver::PhysicalHandle>& out, Mode mode);
  // Whether n more pages could be backed now (reserve, budget headroom, pages mapped ahead in
  // regions that may be stolen). Non-binding: lets a request spanning several regions be refused
  // before any of them does driver work.
  bool CanBack(std::size_t n);
  // Counts a refusal of `pages`, asks other processes to give back, returns kNoMemory.
  Status Refuse(std::size_t pages);
  // The engine's request was granted: tells the budget (a starvation episode is not refused now).
  Status Served();
  // Takes every non-empty handle of `handles` (cleared): to the free list up to the maximum,
  // released otherwise.
  void GiveHandles(std::vector<driver::PhysicalHandle>& handles);

  // --- budget (any size, e.g. eager regions) ---
  // Charges `bytes` as reserved, first giving up this pool's own reserve if the budget is full
  // (MakeRoom); kNoMemory naming the budget when still refused.
  Status Charge(std::uint64_t bytes);
  void Uncharge(std::uint64_t bytes);
  void MoveToInUse(std::uint64_t bytes) { budget_.MoveToInUse(bytes); }
  void MoveToReserved(std::uint64_t bytes) { budget_.MoveToReserved(bytes); }
  // Frees reserved memory of this pool (free list, then mapped-ahead pages) until `bytes` are
  // returned to the budget or nothing is left. Returns the bytes freed.
  std::uint64_t MakeRoom(std::uint64_t bytes);
  // Bytes a foreground request could get now without a refusal: the budget's room plus this
  // pool's reserve (free list and mapped-ahead pages: the budget's reserved column), which
  // TakeHandles uses before creating pages. Reads counters only (one View of the budget): no
  // allocation, no region walk, nothing recorded. Non-binding, like CanBack.
  [[nodiscard]] std::uint64_t Headroom() const;

  // --- signals ---
  void Wake() { worker_.Wake(); }
  // A foreground acquire had to swap pages itself: ends a hold, wakes the worker.
  void NoteMiss();
  // A foreground swap (an engine waiting on a map-ahead miss) is in progress. The worker then
  // defers its own driver work (refilling the reserve, map-ahead): the driver serialises VMM
  // calls, and measured on the H100 a refill running beside an 8 GiB burst cut the burst's rate
  // by up to 40%. The refill resumes right after (EndForeground wakes the worker).
  void BeginForeground() { foreground_.fetch_add(1, std::memory_order_relaxed); }
  void EndForeground() {
    foreground_.fetch_sub(1, std::memory_order_relaxed);
    Wake();
  }
  [[nodiscard]] bool foreground_busy() const {
    return foreground_.load(std::memory_order_relaxed) > 0;
  }
  // Gives back now everything not in use: every mapped-ahead page and the free list; each lazy
  // region maps nothing ahead again until its next acquire (an idle engine).
  Status TrimNow();
  // Stops the background thread for good (before regions are torn down at shutdown).
  void StopWorker();

  [[nodiscard]] std::size_t free_pages() const;
  [[nodiscard]] std::uint64_t zero_page_bytes() const;
  [[nodiscard]] bool worker_running() const { return worker_.running(); }
  [[nodiscard]] std::uint64_t worker_passes() const { return worker_.passes(); }
  [[nodiscard]] bool holding() const;
  // The budget's refusal message for `bytes` on this device.
  [[nodiscard]] std::string RefusalMessage(std::uint64_t bytes) const;

 private:
  std::vector<std::shared_ptr<LazyRegion>> Snapshot();
  void ChargeZeroPage();
  void UnchargeZeroPage();
  Result<driver::PhysicalHandle> CreateHandle();
  // Creates a page whose bytes the caller already charged (uncharged again on failure).
  Result<driver::PhysicalHandle> CreateCharged();
  // Moves up to n pages of the free list to `out`; returns how many.
  std::size_t TakeFree(std::size_t n, std::vector<driver::PhysicalHandle>& out);
  void ReleaseHandle(driver::PhysicalHandle handle);
  void ReleaseFreeList();
  std::size_t Steal(std::size_t n, std::vector<driver::PhysicalHandle>& out);
  // How many of `n` pages Steal could take now (mapped ahead in registered regions, not pinned).
  std::size_t StealablePages(std::size_t n);
  Status GiveBackAll();
  // The background pass (pool_maintenance.cpp).
  void MaintenancePass();
  void RefillFreeList();
  void OnWorkerStart();

  const driver::Driver& driver_;
  const Config config_;
  const int ordinal_;
  const CUdevice device_;
  const CUcontext ctx_;
  Budget& budget_;
  const std::size_t page_size_;
  const std::size_t zero_bytes_;  // the zero memory (ZeroPage::BytesFor)
  PoolCounters counters_;

  std::mutex lazy_mu_;  // zero page creation and worker start
  std::optional<ZeroPage> zero_;
  std::atomic<bool> lazy_ready_{false};

  mutable std::mutex free_mu_;
  std::vector<driver::PhysicalHandle> free_;

  std::mutex regions_mu_;
  struct Registered {
    const LazyRegion* raw;
    std::weak_ptr<LazyRegion> region;
  };
  std::vector<Registered> regions_;

  std::atomic<std::int64_t> hold_until_ns_{0};
  std::atomic<int> foreground_{0};
  BackgroundWorker worker_;  // last: stopped first
};

}  // namespace kvcached
