// PageTable: the state and reference count of every page of a lazy region. Pure bookkeeping (no
// driver calls); the owning region guards it with its mutex.
//
// States: ZERO (aliased to the zero page) -> MAPPED_FREE (real page, unused) -> IN_USE (refs > 0)
// -> MAPPED_FREE -> ZERO. A page is IN_USE exactly when refs > 0, so several acquired ranges
// smaller than a page can share it. Two flags guard driver work done without the mutex:
//   busy: one thread is swapping the page in or out; it alone touches the page's backing until
//         it clears the flag. Foreground acquires wait for busy pages of their range.
//   pins: in-flight acquires that need the page to stay mapped; pinned pages are never chosen
//         for trim, give-back or steal.
// Bitmaps of ZERO and MAPPED_FREE pages keep the background scans cheap (64 pages per word).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/common/region_types.h"

namespace kvcached {

struct PageEntry {
  PageState state = PageState::kZero;
  bool busy = false;
  std::uint16_t pins = 0;
  std::uint32_t refs = 0;
  std::int64_t free_since_ns = 0;  // when the page last became MAPPED_FREE
};

class PageTable {
 public:
  explicit PageTable(std::size_t pages);

  [[nodiscard]] std::size_t size() const { return entries_.size(); }
  [[nodiscard]] const PageEntry& at(std::size_t i) const { return entries_[i]; }
  [[nodiscard]] std::size_t zero_count() const { return zero_; }
  [[nodiscard]] std::size_t mapped_free_count() const { return mapped_free_; }
  [[nodiscard]] std::size_t in_use_count() const { return in_use_; }
  [[nodiscard]] std::size_t busy_count() const { return busy_; }

  // What an acquire of pages [first, end) must wait for or do.
  struct RangeClass {
    bool any_busy = false;
    bool any_zero = false;
  };
  [[nodiscard]] RangeClass Classify(std::size_t first, std::size_t end) const;

  // Increments refs of [first, end); none may be ZERO or busy. Returns how many pages went
  // MAPPED_FREE -> IN_USE.
  std::size_t CommitAcquire(std::size_t first, std::size_t end);
  // The first page of [first, end) with refs == 0, or end when the whole range is acquired.
  [[nodiscard]] std::size_t FirstUnacquired(std::size_t first, std::size_t end) const;
  // Decrements refs of [first, end) (all > 0). Returns how many pages went IN_USE -> MAPPED_FREE.
  std::size_t CommitRelease(std::size_t first, std::size_t end, std::int64_t now_ns);

  void MarkMappedFree(std::size_t i, std::int64_t now_ns);  // ZERO -> MAPPED_FREE
  void MarkZero(std::size_t i);                             // MAPPED_FREE -> ZERO
  void SetBusy(std::size_t i, bool busy);
  void Pin(std::size_t first, std::size_t end);
  void Unpin(std::size_t first, std::size_t end);

  // Up to n ZERO pages that are not busy, lowest first.
  void LowestZero(std::size_t n, std::vector<std::size_t>& out) const;
  // MAPPED_FREE pages free for at least delay_ns, except the `keep` lowest MAPPED_FREE pages
  // (the map-ahead reserve: the engine takes lowest addresses first), ascending.
  void TrimCandidates(std::int64_t now_ns, std::int64_t delay_ns, std::size_t keep,
                      std::vector<std::size_t>& out) const;
  // Up to n MAPPED_FREE pages that are neither busy nor pinned, highest first.
  void Reclaimable(std::size_t n, std::vector<std::size_t>& out) const;

 private:
  [[nodiscard]] bool Takeable(std::size_t i) const {
    const PageEntry& e = entries_[i];
    return e.state == PageState::kMappedFree && !e.busy && e.pins == 0;
  }
  static void SetBit(std::vector<std::uint64_t>& bits, std::size_t i, bool on);

  std::vector<PageEntry> entries_;
  std::vector<std::uint64_t> zero_bits_;
  std::vector<std::uint64_t> free_bits_;
  std::size_t zero_ = 0;
  std::size_t mapped_free_ = 0;
  std::size_t in_use_ = 0;
  std::size_t busy_ = 0;
};

}  // namespace kvcached
