// Errors of the shim's own making, in the caller's API. A budget refusal is an out-of-memory
// error (engines handle that: PyTorch frees its cache and retries, then raises
// torch.OutOfMemoryError); every failure is logged once with its cause.
#pragma once

#include <cuda.h>
#include <driver_types.h>

#include "core/common/status.h"

namespace kvcached::hooks {

enum class Op { kAlloc, kFree, kQuery };

cudaError_t ToCudaError(const Status& status, Op op);
CUresult ToCuResult(const Status& status, Op op);

// Logs `call` failing with `status` at error level, once per (call, error kind) in the process.
void LogFailureOnce(const char* call, const Status& status);

}  // namespace kvcached::hooks
