#include "hooks/region_ops.h"

#include <atomic>

namespace kvcached::hooks {
namespace {
constinit std::atomic<std::int64_t> g_live_regions{0};
}  // namespace

Result<std::uint64_t> CreateRegion(Runtime& runtime, int device, std::uint64_t size,
                                   RegionKind kind) {
  Result<std::uint64_t> base = runtime.CreateRegion(device, size, kind);
  if (base.ok()) g_live_regions.fetch_add(1, std::memory_order_relaxed);
  return base;
}

Status DestroyRegion(Runtime& runtime, std::uint64_t base) {
  Status status = runtime.DestroyRegion(base);
  if (status.ok()) g_live_regions.fetch_sub(1, std::memory_order_relaxed);
  return status;
}

std::int64_t LiveRegions() {
  return g_live_regions.load(std::memory_order_acquire);
}
void ResetRegionCountAfterFork() {
  g_live_regions.store(0, std::memory_order_relaxed);
}

}  // namespace kvcached::hooks
