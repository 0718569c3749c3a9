// Runtime: the process-wide facade of the core. It owns the driver, one DeviceState per GPU
// (page pool, zero page, budget) and the registry of regions by address. It knows nothing of
// interposition: hooks/runtime_access.cpp creates it on first use, and the hooks and the C API
// call into it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "core/budget/budget.h"
#include "core/budget/budget_factory.h"
#include "core/common/region_types.h"
#include "core/common/status.h"
#include "core/config/config.h"

namespace kvcached {

namespace driver {
class Driver;
}

struct DeviceStats {
  std::uint64_t page_size = 0;
  std::uint64_t regions = 0;
  std::uint64_t reserved_va_bytes = 0;
  std::uint64_t in_use_bytes = 0;
  std::uint64_t mapped_free_bytes = 0;
  std::uint64_t pool_bytes = 0;
  std::uint64_t zero_page_bytes = 0;
  std::uint64_t peak_physical_bytes = 0;
  std::uint64_t passthrough_bytes = 0;
  std::uint64_t budget_limit_bytes = 0;
  std::uint64_t maps = 0;
  std::uint64_t unmaps = 0;
  std::uint64_t sync_maps = 0;
  std::uint64_t budget_refusals = 0;
};

// Symbol resolver for the driver library (dlsym-shaped). The shim passes the real dlsym so that
// its own dlsym interposer is not consulted for the core's lookups.
using SymbolLookup = void* (*)(void* handle, const char* name);

class Runtime {
 public:
  // Loads the driver library named by config.cuda_driver and resolves its entry points. Starts
  // no thread and touches no device: per-device state is created on first use of that device.
  static Result<std::unique_ptr<Runtime>> Create(Config config, SymbolLookup lookup = nullptr,
                                                 BudgetFactory budget_factory = nullptr);
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;
  Runtime(Runtime&&) = delete;
  Runtime& operator=(Runtime&&) = delete;
  ~Runtime();

  [[nodiscard]] const Config& config() const;
  driver::Driver& driver();

  Result<std::uint64_t> CreateRegion(int device, std::uint64_t size, RegionKind kind);
  // kNotFound when `base` is not the base of a region.
  Status DestroyRegion(std::uint64_t base);
  // Fast check used by the free hooks (true only for exact region bases).
  [[nodiscard]] bool IsRegionBase(std::uint64_t base) const;
  // Device of the region containing addr, or -1.
  [[nodiscard]] int RegionDevice(std::uint64_t addr) const;

  // All or nothing across every range (each range may lie in a different region).
  Status Acquire(std::span<const ByteRange> ranges);
  Status Release(std::span<const ByteRange> ranges);

  [[nodiscard]] Result<PageState> PageStateAt(std::uint64_t addr) const;
  [[nodiscard]] Result<RegionInfo> Info(std::uint64_t addr) const;
  Result<DeviceStats> Stats(int device);
  // Bytes this process could back now on `device` without a budget refusal (PagePool::Headroom);
  // 0 for a device not used yet (never creates its state). Every engine step may ask.
  Result<std::uint64_t> BudgetHeadroom(int device);
  Status Trim(int device);

  // For virtual cudaMemGetInfo, "shared" view: (free, total) of this process's budget on
  // `device`; free also shrinks with what the other processes on the GPU budget hold.
  Result<std::pair<std::uint64_t, std::uint64_t>> BudgetMemInfo(int device);
  // For virtual cudaMemGetInfo, "process" view: this process as if it had a GPU of its own of
  // its limit. total = the limit; free = total - what the engine allocated on `device` (regions
  // at their full size, pass-through allocations). Other processes and the shim's own background
  // work (pages mapped ahead, the reserve, the zero page) never change it: two reads differ only
  // when this process allocated or freed, or its limit was changed (kvctl limit).
  Result<std::pair<std::uint64_t, std::uint64_t>> ProcessMemInfo(int device);
  // The latest pressure request on `device`'s budget (see Budget::Pressure).
  Result<Budget::PressureInfo> Pressure(int device);
  // What the sharing policy asks of this process on `device` (see Budget::Share).
  Result<ShareVerdict> Share(int device);
  // Share(device).action alone, cheaply when no other engine is starved (every engine step).
  Result<ShareAction> ShareActionNow(int device);
  Status ReportShare(int device, std::uint64_t bytes, std::uint64_t requests);
  // The engine's share unit on `device` (see Budget::SetShareUnit): whole pages, at most the
  // budget; 0 = one page.
  Status SetShareUnit(int device, std::uint64_t bytes);
  // The engine hook's cumulative totals on `device` (see Budget::ReportEngineSteps).
  Status ReportEngineSteps(int device, const EngineSteps& totals);
  // Accounting of allocations passed through to the real allocator (signed delta). Lock-free
  // and never creates the device's state: bytes noted before it exists reach the budget when
  // something else creates it (a region, a C API call, a virtual cudaMemGetInfo).
  void NotePassthrough(int device, std::int64_t delta_bytes) noexcept;
  void SetLabel(const std::string& label);

 private:
  struct Impl;
  explicit Runtime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvcached
