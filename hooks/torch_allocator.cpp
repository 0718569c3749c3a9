#include "hooks/torch_allocator.h"

#include "core/log/log.h"
#include "hooks/error_map.h"
#include "hooks/hook_decls.h"
#include "hooks/hook_paths.h"
#include "hooks/hook_table.h"
#include "hooks/region_ops.h"

namespace kvcached::hooks {
void* TorchMalloc(Runtime* runtime, std::uint64_t size, int device, void* /*stream*/) {
  if (size == 0) return nullptr;
  if (runtime != nullptr && size >= runtime->config().page_size()) {
    Result<std::uint64_t> base = CreateRegion(*runtime, device, size, RegionKind::kLazy);
    if (base.ok()) {
      KVC_LOG_DEBUG("kvcached_torch_malloc({} bytes) on device {} -> lazy region {:#x}", size,
                    device, base.value());
      return reinterpret_cast<void*>(base.value());
    }
    LogFailureOnce("kvcached_torch_malloc", base.status());
    return nullptr;
  }
  auto real_malloc = RealAs<CudaMallocFn>(Fn::kCudaMalloc);
  if (real_malloc == nullptr) return nullptr;
  const DeviceScope device_scope(device);
  void* ptr = nullptr;
  const cudaError_t result = CallReal([&] { return real_malloc(&ptr, size); });
  if (result != cudaSuccess || ptr == nullptr) return nullptr;
  if (runtime != nullptr && Passthroughs().Insert(ToAddress(ptr), {size, device})) {
    runtime->NotePassthrough(device, static_cast<std::int64_t>(size));
  }
  return ptr;
}

void TorchFree(Runtime* runtime, void* ptr, int device, void* /*stream*/) {
  if (ptr == nullptr) return;
  const std::uint64_t address = ToAddress(ptr);
  if (runtime != nullptr && runtime->IsRegionBase(address)) {
    // PyTorch returns a block to the allocator only once its stream work is done; syncing the
    // device anyway costs little next to unmapping, and protects a kernel still in flight.
    (void)CallReal([&] { return RuntimeApi::SynchronizeDevice(device); });
    const Status status = DestroyRegion(*runtime, address);
    if (!status.ok()) LogFailureOnce("kvcached_torch_free", status);
    return;
  }
  auto real_free = RealAs<CudaFreeFn>(Fn::kCudaFree);
  if (real_free == nullptr) return;
  const DeviceScope device_scope(device);
  const std::optional<PassthroughTable::Entry> record =
      runtime != nullptr ? Passthroughs().Erase(address) : std::nullopt;
  const cudaError_t result = CallReal([&] { return real_free(ptr); });
  if (record.has_value() && (result == cudaSuccess || !Passthroughs().Insert(address, *record))) {
    runtime->NotePassthrough(record->device, -static_cast<std::int64_t>(record->size));
  }
}

}  // namespace kvcached::hooks
