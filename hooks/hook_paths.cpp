#include "hooks/hook_paths.h"

#include <fmt/format.h>

#include <string>

#include "hooks/hook_decls.h"
#include "hooks/hook_table.h"

namespace kvcached::hooks {
namespace {

void LogIpcRefusal(const char* call, std::uint64_t address) {
  log::ErrorOnce(
      fmt::format("ipc:{:#x}", address),
      fmt::format("{}({:#x}) refused: this address lies in a kvcached region (CUDA virtual memory "
                  "management), for which the driver cannot create IPC handles. Allocate memory "
                  "you share over CUDA IPC outside a KV window, and below "
                  "KVCACHED_CAPTURE_MIN_MB if that is set",
                  call, address));
}

}  // namespace

bool RuntimeApi::CurrentDevice(int* device) {
  auto get_device = RealAs<CudaGetDeviceFn>(Fn::kCudaGetDevice);
  if (get_device == nullptr) return false;
  const RealCallScope scope;
  return get_device(device) == cudaSuccess;
}

cudaError_t RuntimeApi::SynchronizeDevice(int device) {
  auto sync = RealAs<CudaDeviceSynchronizeFn>(Fn::kCudaDeviceSynchronize);
  if (sync == nullptr) return cudaSuccess;
  const DeviceScope scope(device);
  return sync();
}

DeviceScope::DeviceScope(int device) noexcept {
  auto get_device = RealAs<CudaGetDeviceFn>(Fn::kCudaGetDevice);
  auto set_device = RealAs<CudaSetDeviceFn>(Fn::kCudaSetDevice);
  if (device < 0 || get_device == nullptr || set_device == nullptr) return;
  const RealCallScope scope;
  int current = 0;
  if (get_device(&current) == cudaSuccess && current != device &&
      set_device(device) == cudaSuccess) {
    previous_ = current;
  }
}

DeviceScope::~DeviceScope() {
  if (previous_ < 0) return;
  const RealCallScope scope;
  (void)RealAs<CudaSetDeviceFn>(Fn::kCudaSetDevice)(previous_);
}

bool DriverApi::CurrentDevice(int* device) {
  auto get_device = RealAs<CuCtxGetDeviceFn>(Fn::kCuCtxGetDevice);
  if (get_device == nullptr) return false;
  const RealCallScope scope;
  CUdevice d = 0;
  if (get_device(&d) != CUDA_SUCCESS) return false;
  *device = static_cast<int>(d);
  return true;
}

CUresult DriverApi::SynchronizeDevice(int /*device*/) {
  auto sync = RealAs<CuCtxSynchronizeFn>(Fn::kCuCtxSynchronize);
  return sync != nullptr ? sync() : CUDA_SUCCESS;
}

void LogInternalErrorOnce(const char* call) noexcept {
  try {
    log::ErrorOnce(std::string("internal:") + call,
                   std::string(call) +
                       ": internal error in kvcached (out of host memory?); the "
                       "call was answered without the shim's policy");
  } catch (...) {
    // Nothing left to report with.
  }
}

std::optional<PassthroughTable::Entry> ForgetAllocation(std::uint64_t address) noexcept {
  return Passthroughs().Erase(address);  // takes no allocation: cannot throw
}

void SettleFree(Runtime& runtime, std::uint64_t address,
                const std::optional<PassthroughTable::Entry>& record, bool freed) noexcept {
  if (!record.has_value()) return;
  // Still allocated when the real free failed: record it again. If even that fails (out of host
  // memory), stop counting it, so that the count never keeps bytes no later free subtracts.
  if (!freed && Passthroughs().Insert(address, *record)) return;
  runtime.NotePassthrough(record->device, -static_cast<std::int64_t>(record->size));
}

bool RefuseIpc(const char* call, Runtime& runtime, std::uint64_t address) noexcept {
  try {
    if (runtime.RegionDevice(address) < 0) return false;
    LogIpcRefusal(call, address);
    return true;
  } catch (...) {
    LogInternalErrorOnce(call);
    return false;
  }
}

}  // namespace kvcached::hooks
