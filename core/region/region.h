// Region: one reserved range of device VA handed to the engine as if it were an allocation.
// Lazy regions (LazyRegion) back pages on demand; eager regions (EagerRegion) are fully backed
// at creation. Offsets are bytes from base().
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/common/region_types.h"
#include "core/common/status.h"

namespace kvcached {

// Pages swapped in by one Acquire, so that Undo can put them back exactly.
using SwappedPages = std::vector<std::size_t>;

class Region {
 public:
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  Region(Region&&) = delete;
  Region& operator=(Region&&) = delete;
  virtual ~Region() = default;

  [[nodiscard]] std::uint64_t base() const { return base_; }
  [[nodiscard]] std::uint64_t size() const { return size_; }
  [[nodiscard]] std::uint64_t page_size() const { return page_size_; }
  [[nodiscard]] std::size_t pages() const { return static_cast<std::size_t>(size_ / page_size_); }
  [[nodiscard]] int device() const { return device_; }
  [[nodiscard]] RegionKind kind() const { return kind_; }

  // Backs every page that [offset, offset+length) touches and counts one more reference on
  // each. All or nothing: on failure no page changed state. When `swapped` is given, the pages
  // this call swapped in are appended to it (for Undo).
  virtual Status Acquire(std::uint64_t offset, std::uint64_t length,
                         SwappedPages* swapped = nullptr) = 0;
  // Drops one reference on every page the range touches. kState (nothing changed) when a page
  // of the range holds no reference.
  virtual Status Release(std::uint64_t offset, std::uint64_t length) = 0;
  // Reverts a successful Acquire: releases the range and returns the pages it swapped in to
  // the zero page unless another acquire uses them meanwhile.
  virtual void Undo(std::uint64_t offset, std::uint64_t length, const SwappedPages& swapped) = 0;
  [[nodiscard]] virtual Result<PageState> StateAt(std::uint64_t offset) const = 0;
  // How many pages of [first_page, end_page) an Acquire would have to back now (ZERO pages).
  // A snapshot: lets a request spanning many regions be refused before any driver work.
  [[nodiscard]] virtual std::size_t PagesToBack(std::size_t first_page,
                                                std::size_t end_page) const = 0;
  [[nodiscard]] virtual RegionInfo Info() const = 0;
  // Unmaps everything, returns physical pages, frees the VA. Idempotent; afterwards every call
  // fails with kNotFound. Returns the first driver error (cleanup continues past errors).
  virtual Status Destroy() = 0;

 protected:
  Region(std::uint64_t base, std::uint64_t size, std::uint64_t page_size, int device,
         RegionKind kind)
      : base_(base), size_(size), page_size_(page_size), device_(device), kind_(kind) {}

  // Checks that [offset, offset+length) is non-empty and inside the region, and gives the pages
  // it touches as [first, end).
  Status PageSpan(std::uint64_t offset, std::uint64_t length, std::size_t& first,
                  std::size_t& end) const;
  [[nodiscard]] Status Gone() const;

 private:
  std::uint64_t base_;
  std::uint64_t size_;
  std::uint64_t page_size_;
  int device_;
  RegionKind kind_;
};

// Rounds size up to a multiple of page (0 on overflow).
std::uint64_t RoundUpToPage(std::uint64_t size, std::uint64_t page);

}  // namespace kvcached
