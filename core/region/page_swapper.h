// PageSwapper: the driver side of a lazy region's pages.
//
// Every page that holds no real page is covered by a zero alias: a mapping of one of the zero
// handles (1, 2, 4 .. K pages), aligned to its size within the region. Swapping a run of pages in
// unmaps the aliases covering it (re-aliasing the part of an alias outside the run), maps the real
// pages and grants access with one call; swapping out unmaps the real pages and re-aliases the
// run with the largest aligned chunks that fit in it. The driver charges per mapping for unmap
// (~20 us) and set-access (~34 us), whatever the size: a burst over fresh multi-page aliases pays
// one unmap per chunk instead of one per page (docs/driver-facts.md).
//
// Concurrency: the caller marks each page it passes busy, which makes the calling thread the only
// one touching that page's real backing (PageBacking). An alias may cover pages of several owners,
// so the alias table and the hole marks are guarded by the swapper's own mutex.
#pragma once

#include <cuda.h>

#include <atomic>
#include <cstddef>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "core/common/status.h"
#include "core/driver/handles.h"

namespace kvcached {

struct PageBacking {
  // Declared before the mapping so that the mapping is destroyed (unmapped) first.
  driver::PhysicalHandle handle;  // the real page; on a hole, possibly a stale one to give back
  driver::Mapping mapping;        // the real page's mapping (on a hole, possibly a stale one)
};

class PageSwapper {
 public:
  // zero_handles[level] is a zero handle of 2^level pages.
  PageSwapper(const driver::Driver& driver, CUdevice device, CUdeviceptr base,
              std::size_t page_size, std::vector<CUmemGenericAllocationHandle> zero_handles,
              std::vector<PageBacking>& pages);

  struct Outcome {
    std::size_t done = 0;  // pages[0, done) changed state; the others are untouched
    Status status;         // the first failure
  };

  // Aliases every page (region creation). Returns the first driver error.
  Status AliasAll();
  // Backs pages[i] (ascending) with handles[i]. Runs of contiguous pages are done together with
  // one set-access; the first failing run is rolled back and ends the call. Handles of backed
  // pages are moved out of `handles`; stale handles found on holes go to `leftovers`.
  Outcome SwapIn(std::span<const std::size_t> pages, std::vector<driver::PhysicalHandle>& handles,
                 std::vector<driver::PhysicalHandle>& leftovers);
  // Returns pages[i] (ascending) to the zero alias; their handles are appended to `out`. Stops
  // at the first page whose unmap fails (that page stays backed). A page whose alias cannot be
  // made becomes a hole (it counts as done; the status reports the failure).
  Outcome SwapOut(std::span<const std::size_t> pages, std::vector<driver::PhysicalHandle>& out);
  // Re-aliases a hole; stale handles go to `leftovers`.
  Status Repair(std::size_t page, std::vector<driver::PhysicalHandle>& leftovers);
  // Unmaps every alias (region destruction). Returns the first failure.
  Status UnaliasAll();

  // A hole: an unbacked page without a working alias (after a double driver failure); a stray
  // access there would fault. The pool repairs holes in the background.
  [[nodiscard]] bool IsHole(std::size_t page) const;
  [[nodiscard]] std::size_t holes() const { return holes_.load(std::memory_order_relaxed); }

 private:
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  using Made = std::vector<std::pair<std::size_t, driver::Mapping>>;  // first page, mapping

  [[nodiscard]] CUdeviceptr Addr(std::size_t page) const { return base_ + page * page_size_; }
  // Maps aliases over [first, end) in aligned chunks and grants access, without touching the
  // table (the caller owns those pages' VA). Pages left without a working alias are appended to
  // `failed`. Returns the first driver error.
  Status MapAliases(std::size_t first, std::size_t end, Made& made,
                    std::vector<std::size_t>& failed);
  // --- under mu_ ---
  // Enters made aliases in the table; marks their pages and `failed` ones holes or not.
  void Register(Made& made, const std::vector<std::size_t>& failed);
  // MapAliases + Register.
  Status AliasSpan(std::size_t first, std::size_t end);
  // Removes every alias covering a page of [first, end); the parts of those aliases outside the
  // range are re-aliased. Stops at the first alias that cannot be unmapped.
  Status Unalias(std::size_t first, std::size_t end);
  // Aliases the pages of [first, end) that have neither an alias nor a real mapping; marks pages
  // left with a stale real mapping holes.
  void AliasBare(std::size_t first, std::size_t end);
  void SetHole(std::size_t page, bool hole);

  const driver::Driver& driver_;
  CUdevice device_;
  CUdeviceptr base_;
  std::size_t page_size_;
  std::vector<CUmemGenericAllocationHandle> zero_;  // [level] = 2^level pages
  std::vector<PageBacking>& pages_;

  mutable std::mutex mu_;
  std::vector<std::size_t> alias_of_;     // per page: first page of its alias, or kNone
  std::vector<driver::Mapping> aliases_;  // by first page
  std::vector<char> hole_;                // per page
  std::atomic<std::size_t> holes_{0};
};

}  // namespace kvcached
