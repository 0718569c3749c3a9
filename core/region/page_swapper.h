// PageSwapper: the driver side of a lazy region's pages. Swapping a page in unmaps its zero
// alias and maps a real page; swapping out does the reverse. Access rights are lost on every
// remap, and cuMemSetAccess costs per call (not per byte), so contiguous pages share one call.
//
// The swapper is called without the region's mutex: each page it touches is marked busy by the
// caller, which makes the calling thread the only one touching that page's backing.
#pragma once

#include <cuda.h>

#include <atomic>
#include <cstddef>
#include <span>
#include <vector>

#include "core/common/status.h"
#include "core/driver/handles.h"

namespace kvcached {

struct PageBacking {
  // Declared before the mapping so that the mapping is destroyed (unmapped) first.
  driver::PhysicalHandle handle;  // the real page; on a hole, possibly a stale one to give back
  driver::Mapping mapping;        // the zero alias, the real page, or nothing (a hole)
  bool hole = false;              // ZERO page without a usable zero alias (a double failure)
};

class PageSwapper {
 public:
  PageSwapper(const driver::Driver& driver, CUdevice device, CUdeviceptr base,
              std::size_t page_size, CUmemGenericAllocationHandle zero_handle,
              std::vector<PageBacking>& pages)
      : driver_(driver),
        device_(device),
        base_(base),
        page_size_(page_size),
        zero_(zero_handle),
        pages_(pages) {}

  struct Outcome {
    std::size_t done = 0;  // pages[0, done) changed state; the others are untouched
    Status status;         // the first failure
  };

  // Maps the zero page at every page, then grants access with one call. (Region creation.)
  Status AliasAll();
  // Backs pages[i] (ascending) with handles[i]. Runs of contiguous pages are done together with
  // one set-access; the first failing run is rolled back and ends the call. Handles of backed
  // pages are moved out of `handles`; stale handles found on holes go to `leftovers`.
  Outcome SwapIn(std::span<const std::size_t> pages, std::vector<driver::PhysicalHandle>& handles,
                 std::vector<driver::PhysicalHandle>& leftovers);
  // Returns pages[i] (ascending) to the zero page; their handles are appended to `out`. Stops
  // at the first page whose unmap fails (that page stays backed).
  Outcome SwapOut(std::span<const std::size_t> pages, std::vector<driver::PhysicalHandle>& out);
  // Re-aliases a hole to the zero page; stale handles go to `leftovers`.
  Status Repair(std::size_t page, std::vector<driver::PhysicalHandle>& leftovers);

  [[nodiscard]] std::size_t holes() const { return holes_.load(std::memory_order_relaxed); }

 private:
  [[nodiscard]] CUdeviceptr Addr(std::size_t page) const { return base_ + page * page_size_; }
  // One cuMemUnmap for a run of adjacent mapped pages; false (nothing changed) where the run is
  // too short, a page has no mapping, or the driver refuses a multi-mapping unmap.
  bool UnmapRun(std::span<const std::size_t> run);
  Status SwapInRun(std::span<const std::size_t> run, driver::PhysicalHandle* handles,
                   std::vector<driver::PhysicalHandle>& leftovers);
  // Points an unmapped page at the zero page (with access); marks a hole on failure.
  void AliasZero(std::size_t page);
  void SetHole(std::size_t page, bool hole);

  const driver::Driver& driver_;
  CUdevice device_;
  CUdeviceptr base_;
  std::size_t page_size_;
  CUmemGenericAllocationHandle zero_;
  std::vector<PageBacking>& pages_;
  std::atomic<std::size_t> holes_{0};
};

}  // namespace kvcached
