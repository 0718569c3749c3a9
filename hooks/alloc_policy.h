// Which allocations become regions (docs/interposition.md, "Which allocations become elastic"):
//   - inside a KV window (per thread, opened by the engine hook through the C API), requests of
//     at least one page become lazy regions: reserved VA, backed only where the engine acquires;
//   - outside a window, with KVCACHED_CAPTURE_MIN_MB > 0, requests of at least that size become
//     eager regions: fully backed at once, but counted in the shared budget and cappable;
//   - everything else passes straight to the real allocator, untouched.
// Nothing the engine may touch without telling the shim is ever left unbacked.
#pragma once

#include <cstdint>

#include "core/config/config.h"

namespace kvcached::hooks {

enum class AllocAction : std::uint8_t { kPassThrough, kLazyRegion, kEagerRegion };

AllocAction DecideAllocation(const Config& config, std::uint64_t size, int kv_window_depth);

// This thread's KV window nesting depth (kvcached_kv_window_begin/end).
int KvWindowDepth();
void EnterKvWindow();
// False (and no change) when no window is open on this thread.
bool LeaveKvWindow();

}  // namespace kvcached::hooks
