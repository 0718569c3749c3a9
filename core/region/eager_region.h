// EagerRegion: fully backed at creation, with as few and as large physical allocations as the
// driver gives (mapping cost is per call, not per byte), all charged to the budget as in use.
// Acquire/Release are no-ops: every page is always IN_USE.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/driver/handles.h"
#include "core/region/region.h"

namespace kvcached {

class PagePool;

class EagerRegion final : public Region {
  struct Key {
    explicit Key() = default;
  };

 public:
  // Charges the rounded size, then creates it as one physical allocation if possible, halving
  // the allocation size on each failure down to one page; one set-access over the whole range.
  static Result<std::shared_ptr<EagerRegion>> Create(PagePool& pool, std::uint64_t size);
  EagerRegion(Key key, PagePool& pool, driver::VaReservation va);
  EagerRegion(const EagerRegion&) = delete;
  EagerRegion& operator=(const EagerRegion&) = delete;
  EagerRegion(EagerRegion&&) = delete;
  EagerRegion& operator=(EagerRegion&&) = delete;
  ~EagerRegion() override;

  Status Acquire(std::uint64_t offset, std::uint64_t length, SwappedPages* swapped) override;
  Status Release(std::uint64_t offset, std::uint64_t length) override;
  void Undo(std::uint64_t /*offset*/, std::uint64_t /*length*/,
            const SwappedPages& /*swapped*/) override {}
  [[nodiscard]] Result<PageState> StateAt(std::uint64_t offset) const override;
  [[nodiscard]] std::size_t PagesToBack(std::size_t /*first_page*/,
                                        std::size_t /*end_page*/) const override {
    return 0;  // backed at creation
  }
  [[nodiscard]] RegionInfo Info() const override;
  Status Destroy() override;

  // Number of physical allocations backing the region (1 unless the driver refused bigger).
  [[nodiscard]] std::size_t chunks() const { return chunks_.size(); }

 private:
  struct Chunk {
    driver::PhysicalHandle handle;  // declared first: destroyed after the mapping
    driver::Mapping mapping;
  };
  Status Back();

  PagePool& pool_;
  driver::VaReservation va_;
  std::vector<Chunk> chunks_;
  bool charged_ = false;  // size() charged to the budget
  bool in_use_ = false;   // and moved to the in-use column
  mutable std::mutex mu_;
  bool destroyed_ = false;
};

}  // namespace kvcached
