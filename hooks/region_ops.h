// Region creation and destruction on behalf of the hooks and the C API, with a count of the
// regions alive, so that the shim's exit handler knows whether tearing the Runtime down is
// cheap and safe (no regions left) or should be left to process exit.
#pragma once

#include <cstdint>

#include "core/common/status.h"
#include "core/runtime/runtime.h"

namespace kvcached::hooks {

Result<std::uint64_t> CreateRegion(Runtime& runtime, int device, std::uint64_t size,
                                   RegionKind kind);
Status DestroyRegion(Runtime& runtime, std::uint64_t base);
std::int64_t LiveRegions();
void ResetRegionCountAfterFork();

}  // namespace kvcached::hooks
