// PyTorch pluggable-allocator entry points (torch.cuda.memory.CUDAPluggableAllocator), behind
// kvcached_torch_malloc / kvcached_torch_free in the C API. An engine that allocates its KV cache
// inside a torch.cuda.MemPool built on them gets lazy regions without any KV window.
#pragma once

#include <cstdint>

#include "core/runtime/runtime.h"

namespace kvcached::hooks {

// Requests of at least one page become lazy regions on `device`; smaller ones (and every request
// when `runtime` is null, i.e. the shim is a pass-through) go to the real cudaMalloc with
// `device` current. Null on failure, as PyTorch expects (it then reports out of memory).
void* TorchMalloc(Runtime* runtime, std::uint64_t size, int device, void* stream);
void TorchFree(Runtime* runtime, void* ptr, int device, void* stream);

}  // namespace kvcached::hooks
