// RegionRegistry: every live region by base address, for lookups by any address inside one.
// Lookups take a shared lock; IsBase is lock-free while no region exists (the free hooks ask it
// on every cudaFree).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <shared_mutex>
#include <vector>

#include "core/region/region.h"

namespace kvcached {

class RegionRegistry {
 public:
  void Insert(std::shared_ptr<Region> region);
  // Removes and returns the region whose base is `base` (null if none).
  std::shared_ptr<Region> Remove(std::uint64_t base);
  // The region containing addr (null if none).
  [[nodiscard]] std::shared_ptr<Region> Find(std::uint64_t addr) const;
  [[nodiscard]] bool IsBase(std::uint64_t base) const;
  void ForEach(const std::function<void(const Region&)>& fn) const;
  // Removes and returns every region.
  std::vector<std::shared_ptr<Region>> TakeAll();

 private:
  mutable std::shared_mutex mu_;
  std::map<std::uint64_t, std::shared_ptr<Region>> regions_;
  std::atomic<std::size_t> count_{0};
};

}  // namespace kvcached
