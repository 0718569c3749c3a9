#include "core/runtime/region_registry.h"

#include <mutex>

namespace kvcached {

void RegionRegistry::Insert(std::shared_ptr<Region> region) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  std::uint64_t base = region->base();
  regions_[base] = std::move(region);
  count_.store(regions_.size(), std::memory_order_release);
}

std::shared_ptr<Region> RegionRegistry::Remove(std::uint64_t base) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  auto it = regions_.find(base);
  if (it == regions_.end()) return nullptr;
  std::shared_ptr<Region> region = std::move(it->second);
  regions_.erase(it);
  count_.store(regions_.size(), std::memory_order_release);
  return region;
}

std::shared_ptr<Region> RegionRegistry::Find(std::uint64_t addr) const {
  if (count_.load(std::memory_order_acquire) == 0) return nullptr;
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto it = regions_.upper_bound(addr);
  if (it == regions_.begin()) return nullptr;
  --it;
  if (addr - it->first >= it->second->size()) return nullptr;
  return it->second;
}

bool RegionRegistry::IsBase(std::uint64_t base) const {
  if (count_.load(std::memory_order_acquire) == 0) return false;
  std::shared_lock<std::shared_mutex> lock(mu_);
  return regions_.contains(base);
}

void RegionRegistry::ForEach(const std::function<void(const Region&)>& fn) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  for (const auto& [base, region] : regions_) fn(*region);
}

std::vector<std::shared_ptr<Region>> RegionRegistry::TakeAll() {
  std::unique_lock<std::shared_mutex> lock(mu_);
  std::vector<std::shared_ptr<Region>> out;
  out.reserve(regions_.size());
  for (auto& [base, region] : regions_) out.push_back(std::move(region));
  regions_.clear();
  count_.store(0, std::memory_order_release);
  return out;
}

}  // namespace kvcached
