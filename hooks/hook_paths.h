// The shared bodies of the interposed allocation functions, written once for both APIs:
// RuntimeApi (cudaError_t, void* pointers) and DriverApi (CUresult, CUdeviceptr).
//
// Invariants every path keeps:
//   - a call made from inside one of our own real calls passes straight through (reentrancy);
//   - whatever the shim does not take over reaches the real function with the caller's exact
//     arguments, and its return code and pointer come back unchanged;
//   - every real call made here runs inside a RealCallScope.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "core/log/log.h"
#include "core/runtime/runtime.h"
#include "hooks/alloc_policy.h"
#include "hooks/error_map.h"
#include "hooks/meminfo_mode.h"
#include "hooks/passthrough_table.h"
#include "hooks/reentrancy.h"
#include "hooks/region_ops.h"
#include "hooks/runtime_access.h"

namespace kvcached::hooks {

struct RuntimeApi {
  using Result = cudaError_t;
  static constexpr Result kSuccess = cudaSuccess;
  static constexpr Result kInvalidValue = cudaErrorInvalidValue;
  static bool CurrentDevice(int* device);  // real cudaGetDevice
  // Waits for all work on `device` (before a region there is unmapped).
  static Result SynchronizeDevice(int device);
  static Result FromStatus(const Status& s, Op op) { return ToCudaError(s, op); }
};

struct DriverApi {
  using Result = CUresult;
  static constexpr Result kSuccess = CUDA_SUCCESS;
  static constexpr Result kInvalidValue = CUDA_ERROR_INVALID_VALUE;
  static bool CurrentDevice(int* device);  // real cuCtxGetDevice
  // Waits for all work in the current context (the caller's: where it allocated the region).
  static Result SynchronizeDevice(int device);
  static Result FromStatus(const Status& s, Op op) { return ToCuResult(s, op); }
};

template <class Ptr>
std::uint64_t ToAddress(Ptr p) {
  if constexpr (std::is_pointer_v<Ptr>) {
    return reinterpret_cast<std::uint64_t>(p);
  } else {
    return static_cast<std::uint64_t>(p);
  }
}

template <class Ptr>
Ptr FromAddress(std::uint64_t address) {
  if constexpr (std::is_pointer_v<Ptr>) {
    return reinterpret_cast<Ptr>(address);
  } else {
    return static_cast<Ptr>(address);
  }
}

template <class RealCall>
auto CallReal(RealCall&& real) {
  const RealCallScope scope;
  return real();
}

// ---- the policy side, noexcept: no C++ exception may leave an interposed function (its
// callers are C). An exception here (bad_alloc) is reported once and treated as a failure of
// the shim's own work, never of the real call.

// Logs "call: internal error" once (for exceptions caught in the hooks).
void LogInternalErrorOnce(const char* call) noexcept;

// The region policy for one allocation: nullopt = pass it through; otherwise the result to
// return (and, on success, the region's base in *base).
template <class Api>
std::optional<typename Api::Result> TryRegionAllocation(const char* call, Runtime& runtime,
                                                        std::size_t size,
                                                        std::uint64_t* base) noexcept {
  try {
    const AllocAction action = DecideAllocation(runtime.config(), size, KvWindowDepth());
    int device = 0;
    if (action == AllocAction::kPassThrough || !Api::CurrentDevice(&device)) return std::nullopt;
    const RegionKind kind =
        action == AllocAction::kLazyRegion ? RegionKind::kLazy : RegionKind::kEager;
    Result<std::uint64_t> region = CreateRegion(runtime, device, size, kind);
    if (region.ok()) {
      *base = region.value();
      KVC_LOG_DEBUG("{}({} bytes) on device {} -> {} region {:#x}", call, size, device,
                    kind == RegionKind::kLazy ? "lazy" : "eager", region.value());
      return Api::kSuccess;
    }
    LogFailureOnce(call, region.status());
    // A lazy region is what the engine asked for (it opened a KV window), and a budget refusal
    // must hold; other failures of an eager capture -- bookkeeping the engine never asked for --
    // fall back to the real allocator.
    if (action == AllocAction::kLazyRegion || region.status().code() == Errc::kNoMemory) {
      return Api::FromStatus(region.status(), Op::kAlloc);
    }
    return std::nullopt;
  } catch (...) {
    LogInternalErrorOnce(call);
    return Api::FromStatus(Status(Errc::kNoMemory, "internal error"), Op::kAlloc);
  }
}

// Records a successful pass-through allocation.
template <class Api>
void CountAllocation(const char* call, Runtime& runtime, std::uint64_t address,
                     std::size_t size) noexcept {
  try {
    int device = 0;
    if (address == 0 || !Api::CurrentDevice(&device)) return;
    // Counted only once recorded, so that its free subtracts exactly what was added.
    if (!Passthroughs().Insert(address, {size, device})) {
      LogInternalErrorOnce(call);
      return;
    }
    runtime.NotePassthrough(device, static_cast<std::int64_t>(size));
    KVC_LOG_TRACE("{}({} bytes) passed through -> {:#x}", call, size, address);
  } catch (...) {
    LogInternalErrorOnce(call);
  }
}

// Forgets a pass-through allocation before its real free (nullopt if it was never counted).
std::optional<PassthroughTable::Entry> ForgetAllocation(std::uint64_t address) noexcept;
// After the real free: uncounts the allocation on success, or restores its record.
void SettleFree(Runtime& runtime, std::uint64_t address,
                const std::optional<PassthroughTable::Entry>& record, bool freed) noexcept;

// A region's free: nullopt if `address` is not a region base; otherwise the result to return.
template <class Api>
std::optional<typename Api::Result> TryRegionFree(const char* call, Runtime& runtime,
                                                  std::uint64_t address) noexcept {
  try {
    if (!runtime.IsRegionBase(address)) return std::nullopt;
    const int device = runtime.RegionDevice(address);
    (void)CallReal([&] { return Api::SynchronizeDevice(device); });
    const Status status = DestroyRegion(runtime, address);
    if (status.ok()) {
      KVC_LOG_DEBUG("{}({:#x}) released a region", call, address);
      return Api::kSuccess;
    }
    LogFailureOnce(call, status);
    return Api::FromStatus(status, Op::kFree);
  } catch (...) {
    LogInternalErrorOnce(call);
    return Api::FromStatus(Status(Errc::kDriver, "internal error"), Op::kFree);
  }
}

// ---- the hook bodies

// cudaMalloc, cudaMallocAsync, cuMemAlloc, cuMemAllocAsync (and _ptsz forms).
template <class Api, class Ptr, class RealAlloc>
typename Api::Result AllocateHook(const char* call, Ptr* out, std::size_t size,
                                  RealAlloc&& real_alloc) {
  if (InRealCall()) return real_alloc();
  const RuntimeRef runtime = AcquireRuntime();
  if (!runtime) return CallReal(real_alloc);
  if (out != nullptr) {
    std::uint64_t base = 0;
    const std::optional<typename Api::Result> taken =
        TryRegionAllocation<Api>(call, *runtime, size, &base);
    if (taken.has_value()) {
      if (*taken == Api::kSuccess) *out = FromAddress<Ptr>(base);
      return *taken;
    }
  }
  const typename Api::Result result = CallReal(real_alloc);
  if (result == Api::kSuccess && out != nullptr) {
    CountAllocation<Api>(call, *runtime, ToAddress(*out), size);
  }
  return result;
}

// Makes `device` current for a real runtime call and restores the caller's device after.
// PyTorch usually calls with `device` current already; then this costs one cudaGetDevice.
class DeviceScope {
 public:
  explicit DeviceScope(int device) noexcept;
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
  DeviceScope(DeviceScope&&) = delete;
  DeviceScope& operator=(DeviceScope&&) = delete;

 private:
  int previous_ = -1;
};

// cudaFree, cudaFreeAsync, cuMemFree, cuMemFreeAsync (and _ptsz forms). Before a region is
// unmapped, the device is synchronised, standing in for the implicit synchronisation of the
// real free (also for the async forms: the stream's pending work must not touch unmapped
// memory; region frees are rare, so the wider wait costs nothing that matters).
template <class Api, class RealFree>
typename Api::Result FreeHook(const char* call, std::uint64_t address, RealFree&& real_free) {
  if (InRealCall() || address == 0) return real_free();
  const RuntimeRef runtime = AcquireRuntime();
  if (!runtime) return CallReal(real_free);
  if (const auto freed = TryRegionFree<Api>(call, *runtime, address); freed.has_value()) {
    return *freed;
  }
  // Forget the record before the real free: once the memory is returned, another thread may be
  // handed the same address and record it anew.
  const std::optional<PassthroughTable::Entry> record = ForgetAllocation(address);
  const typename Api::Result result = CallReal(real_free);
  SettleFree(*runtime, address, record, result == Api::kSuccess);
  return result;
}

// cudaMemGetInfo, cuMemGetInfo: the real values, or this process's view of its budget (see
// hooks/meminfo_mode.h for the modes), for the current device.
template <class Api>
void ApplyVirtualMemInfo(const char* call, Runtime& runtime, size_t* free_bytes,
                         size_t* total_bytes) noexcept {
  try {
    const MemInfoMode mode = CurrentMemInfoMode(runtime.config());
    int device = 0;
    if (mode == MemInfoMode::kReal || !Api::CurrentDevice(&device)) return;
    Result<std::pair<std::uint64_t, std::uint64_t>> view = mode == MemInfoMode::kProcess
                                                               ? runtime.ProcessMemInfo(device)
                                                               : runtime.BudgetMemInfo(device);
    if (!view.ok()) {
      LogFailureOnce(call, view.status());
      return;
    }
    if (free_bytes != nullptr) {
      // The process view ignores the real free memory on purpose: what others hold (lazily
      // backed KV caches included) must not change it; the budget arbitrates instead.
      *free_bytes = static_cast<size_t>(
          mode == MemInfoMode::kProcess ? view.value().first
                                        : std::min<std::uint64_t>(*free_bytes, view.value().first));
    }
    if (total_bytes != nullptr) *total_bytes = static_cast<size_t>(view.value().second);
  } catch (...) {
    LogInternalErrorOnce(call);
  }
}

template <class Api, class RealInfo>
typename Api::Result MemGetInfoHook(const char* call, size_t* free_bytes, size_t* total_bytes,
                                    RealInfo&& real_info) {
  if (InRealCall()) return real_info();
  const RuntimeRef runtime = AcquireRuntime();
  const typename Api::Result result = CallReal(real_info);
  if (runtime && result == Api::kSuccess) {
    ApplyVirtualMemInfo<Api>(call, *runtime, free_bytes, total_bytes);
  }
  return result;
}

// True (and logged once per address) when `address` lies in a region: the driver cannot
// create IPC handles for such memory.
bool RefuseIpc(const char* call, Runtime& runtime, std::uint64_t address) noexcept;

// cudaIpcGetMemHandle, cuIpcGetMemHandle: the real driver cannot export VMM memory anyway; we
// refuse it up front with a message that names the pointer and the way out.
template <class Api, class RealIpc>
typename Api::Result IpcGetMemHandleHook(const char* call, std::uint64_t address,
                                         RealIpc&& real_ipc) {
  if (InRealCall()) return real_ipc();
  {
    const RuntimeRef runtime = AcquireRuntime();
    if (runtime && address != 0 && RefuseIpc(call, *runtime, address)) return Api::kInvalidValue;
  }
  return CallReal(real_ipc);
}

}  // namespace kvcached::hooks
