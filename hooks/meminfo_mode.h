// What cudaMemGetInfo / cuMemGetInfo report under the shim (docs/configuration.md,
// KVCACHED_VIRTUAL_MEMINFO):
//   kReal     the driver's values, unchanged;
//   kProcess  this process as if it had a GPU of its own of its budget limit: total = the limit,
//             free = total - what this process allocated. Neighbours never change it, so engines
//             that size their KV cache from free memory and check it did not grow (vLLM) start
//             next to each other in any order;
//   kShared   total = the limit, free = min(real free, what the shared GPU budget still grants
//             this process, after every other process's charge).
// KVCACHED_VIRTUAL_MEMINFO=process (or true) selects kProcess, =shared kShared, =real (or false)
// kReal; kvcached_set_meminfo_mode (the engine hook) overrides the variable for the rest of the
// process's life.
#pragma once

#include <cstdint>

#include "core/config/config.h"

namespace kvcached::hooks {

enum class MemInfoMode : std::int8_t { kReal = 0, kProcess = 1, kShared = 2 };

MemInfoMode CurrentMemInfoMode(const Config& config) noexcept;
void SetMemInfoMode(MemInfoMode mode) noexcept;

}  // namespace kvcached::hooks
