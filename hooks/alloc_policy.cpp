#include "hooks/alloc_policy.h"

namespace kvcached::hooks {
namespace {
thread_local int t_kv_window_depth = 0;
}  // namespace

AllocAction DecideAllocation(const Config& config, std::uint64_t size, int kv_window_depth) {
  if (kv_window_depth > 0 && size >= config.page_size()) return AllocAction::kLazyRegion;
  if (config.capture_min_bytes > 0 && size >= config.capture_min_bytes) {
    return AllocAction::kEagerRegion;
  }
  return AllocAction::kPassThrough;
}

int KvWindowDepth() {
  return t_kv_window_depth;
}
void EnterKvWindow() {
  ++t_kv_window_depth;
}
bool LeaveKvWindow() {
  if (t_kv_window_depth == 0) return false;
  --t_kv_window_depth;
  return true;
}

}  // namespace kvcached::hooks
