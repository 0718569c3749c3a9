// The runtime API subset the tests need, over the driver reached through cuGetProcAddress.
// Semantics follow libcudart: lazy primary-context set-up on first use (cudaFree(nullptr) is the
// idiom), a per-thread current device, a per-thread last error, cudaMalloc(0) -> nullptr.
#include <cuda_runtime_api.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "tests/fakecuda/cudart_driver.h"
#include "tests/fakecuda/cudart_errors.h"
#include "tests/fakecuda/no_destructor.h"

namespace fakecudart {
namespace {

constexpr int kRuntimeVersion = 13000;

struct ThreadState {
  int device = 0;
  bool device_set = false;  // cudaSetDevice was called on this thread
  cudaError_t last_error = cudaSuccess;
};

ThreadState& Thread() {
  thread_local ThreadState t;
  return t;
}

cudaError_t Record(cudaError_t e) {
  if (e != cudaSuccess) {
    Thread().last_error = e;
  }
  return e;
}

cudaError_t Loaded(const Driver** out) {
  const Driver& d = GetDriver();
  if (!d.loaded) {
    return cudaErrorInsufficientDriver;  // no usable libcuda.so.1
  }
  *out = &d;
  return cudaSuccess;
}

cudaError_t Ready(const Driver** out) {
  const Driver* d = nullptr;
  if (const cudaError_t e = Loaded(&d); e != cudaSuccess) {
    return e;
  }
  if (d->init_result != CUDA_SUCCESS) {
    return FromDriver(d->init_result);
  }
  *out = d;
  return cudaSuccess;
}

// Each device's primary context, retained once for the life of the process.
cudaError_t Primary(const Driver& d, int device, CUcontext* ctx) {
  static fakecuda::NoDestructor<std::mutex> mu;
  static fakecuda::NoDestructor<std::vector<CUcontext>> primaries;
  const std::lock_guard<std::mutex> lock(*mu);
  if (device < 0) {
    return cudaErrorInvalidDevice;
  }
  if (primaries->size() <= static_cast<std::size_t>(device)) {
    primaries->resize(static_cast<std::size_t>(device) + 1, nullptr);
  }
  CUcontext& slot = (*primaries)[static_cast<std::size_t>(device)];
  if (slot == nullptr) {
    if (const CUresult r = d.legacy.cuDevicePrimaryCtxRetain(&slot, device); r != CUDA_SUCCESS) {
      slot = nullptr;
      return FromDriver(r);
    }
  }
  *ctx = slot;
  return cudaSuccess;
}

// Makes sure this thread has a current context: the one a driver-API user made current, or
// the primary context of this thread's device.
cudaError_t Context(const Driver** out) {
  const Driver* d = nullptr;
  if (const cudaError_t e = Ready(&d); e != cudaSuccess) {
    return e;
  }
  ThreadState& t = Thread();
  CUcontext current = nullptr;
  if (const CUresult r = d->legacy.cuCtxGetCurrent(&current); r != CUDA_SUCCESS) {
    return FromDriver(r);
  }
  if (current == nullptr || t.device_set) {
    CUcontext want = nullptr;
    if (const cudaError_t e = Primary(*d, t.device, &want); e != cudaSuccess) {
      return e;
    }
    if (want != current) {
      if (const CUresult r = d->legacy.cuCtxSetCurrent(want); r != CUDA_SUCCESS) {
        return FromDriver(r);
      }
    }
  }
  *out = d;
  return cudaSuccess;
}

const DriverTable& Table(const Driver& d, bool per_thread) {
  return per_thread ? d.per_thread : d.legacy;
}

cudaError_t Malloc(void** dev_ptr, size_t size, cudaStream_t stream, bool async, bool per_thread) {
  if (dev_ptr == nullptr) {
    return cudaErrorInvalidValue;
  }
  const Driver* d = nullptr;
  if (const cudaError_t e = Context(&d); e != cudaSuccess) {
    return e;
  }
  if (size == 0) {
    *dev_ptr = nullptr;  // as libcudart: a zero-byte request succeeds with no memory
    return cudaSuccess;
  }
  CUdeviceptr p = 0;
  const DriverTable& t = Table(*d, per_thread);
  const CUresult r = async ? t.cuMemAllocAsync(&p, size, stream) : t.cuMemAlloc(&p, size);
  if (r != CUDA_SUCCESS) {
    return FromDriver(r);
  }
  *dev_ptr = reinterpret_cast<void*>(p);
  return cudaSuccess;
}

cudaError_t Free(void* dev_ptr, cudaStream_t stream, bool async, bool per_thread) {
  const Driver* d = nullptr;
  if (const cudaError_t e = Context(&d); e != cudaSuccess) {
    return e;
  }
  if (dev_ptr == nullptr) {
    return cudaSuccess;  // cudaFree(nullptr): the runtime's "initialise now" idiom
  }
  const auto p = reinterpret_cast<CUdeviceptr>(dev_ptr);
  const DriverTable& t = Table(*d, per_thread);
  return FromDriver(async ? t.cuMemFreeAsync(p, stream) : t.cuMemFree(p));
}

cudaError_t Memcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind, bool per_thread) {
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) {
    return cudaErrorInvalidMemcpyDirection;
  }
  const Driver* d = nullptr;
  if (const cudaError_t e = Context(&d); e != cudaSuccess) {
    return e;
  }
  if (count == 0) {
    return cudaSuccess;
  }
  return FromDriver(
      Table(*d, per_thread)
          .cuMemcpy(reinterpret_cast<CUdeviceptr>(dst), reinterpret_cast<CUdeviceptr>(src), count));
}

cudaError_t Memset(void* dev_ptr, int value, size_t count, bool per_thread) {
  const Driver* d = nullptr;
  if (const cudaError_t e = Context(&d); e != cudaSuccess) {
    return e;
  }
  if (count == 0) {
    return cudaSuccess;
  }
  return FromDriver(Table(*d, per_thread)
                        .cuMemsetD8(reinterpret_cast<CUdeviceptr>(dev_ptr),
                                    static_cast<unsigned char>(value), count));
}

cudaError_t EntryPoint(const char* symbol, void** func_ptr, unsigned int version,
                       unsigned long long flags, cudaDriverEntryPointQueryResult* status,
                       bool per_thread_default) {
  if (func_ptr == nullptr || symbol == nullptr) {
    return cudaErrorInvalidValue;
  }
  const Driver* d = nullptr;
  if (const cudaError_t e = Loaded(&d); e != cudaSuccess) {
    return e;
  }
  cuuint64_t cu_flags = flags;
  if (flags == cudaEnableDefault) {
    cu_flags = per_thread_default ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
                                  : CU_GET_PROC_ADDRESS_LEGACY_STREAM;
  }
  CUdriverProcAddressQueryResult cu_status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  const CUresult r = d->get_proc(symbol, func_ptr, static_cast<int>(version), cu_flags, &cu_status);
  if (status != nullptr) {
    *status = static_cast<cudaDriverEntryPointQueryResult>(cu_status);
  }
  if (r == CUDA_ERROR_NOT_FOUND) {
    *func_ptr = nullptr;  // documented: success, a null pointer and the status say why
    return cudaSuccess;
  }
  return FromDriver(r);
}

}  // namespace
}  // namespace fakecudart

using fakecudart::Record;

extern "C" {

cudaError_t cudaMalloc(void** devPtr, size_t size) {
  return Record(fakecudart::Malloc(devPtr, size, nullptr, false, false));
}

cudaError_t cudaFree(void* devPtr) {
  return Record(fakecudart::Free(devPtr, nullptr, false, false));
}

cudaError_t cudaMallocAsync(void** devPtr, size_t size, cudaStream_t hStream) {
  return Record(fakecudart::Malloc(devPtr, size, hStream, true, false));
}

cudaError_t cudaMallocAsync_ptsz(void** devPtr, size_t size, cudaStream_t hStream) {
  return Record(fakecudart::Malloc(devPtr, size, hStream, true, true));
}

cudaError_t cudaFreeAsync(void* devPtr, cudaStream_t hStream) {
  return Record(fakecudart::Free(devPtr, hStream, true, false));
}

cudaError_t cudaFreeAsync_ptsz(void* devPtr, cudaStream_t hStream) {
  return Record(fakecudart::Free(devPtr, hStream, true, true));
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  if (free == nullptr || total == nullptr) {
    return Record(cudaErrorInvalidValue);
  }
  const fakecudart::Driver* d = nullptr;
  if (const cudaError_t e = fakecudart::Context(&d); e != cudaSuccess) {
    return Record(e);
  }
  return Record(fakecudart::FromDriver(d->legacy.cuMemGetInfo(free, total)));
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  return Record(fakecudart::Memcpy(dst, src, count, kind, false));
}

cudaError_t cudaMemcpy_ptds(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  return Record(fakecudart::Memcpy(dst, src, count, kind, true));
}

cudaError_t cudaMemset(void* devPtr, int value, size_t count) {
  return Record(fakecudart::Memset(devPtr, value, count, false));
}

cudaError_t cudaMemset_ptds(void* devPtr, int value, size_t count) {
  return Record(fakecudart::Memset(devPtr, value, count, true));
}

cudaError_t cudaGetDriverEntryPoint(const char* symbol, void** funcPtr, unsigned long long flags,
                                    enum cudaDriverEntryPointQueryResult* driverStatus) {
  return Record(fakecudart::EntryPoint(symbol, funcPtr, fakecudart::kRuntimeVersion, flags,
                                       driverStatus, false));
}

cudaError_t cudaGetDriverEntryPoint_ptsz(const char* symbol, void** funcPtr,
                                         unsigned long long flags,
                                         enum cudaDriverEntryPointQueryResult* driverStatus) {
  return Record(fakecudart::EntryPoint(symbol, funcPtr, fakecudart::kRuntimeVersion, flags,
                                       driverStatus, true));
}

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** funcPtr,
                                             unsigned int cudaVersion, unsigned long long flags,
                                             enum cudaDriverEntryPointQueryResult* driverStatus) {
  return Record(fakecudart::EntryPoint(symbol, funcPtr, cudaVersion, flags, driverStatus, false));
}

cudaError_t cudaGetDriverEntryPointByVersion_ptsz(
    const char* symbol, void** funcPtr, unsigned int cudaVersion, unsigned long long flags,
    enum cudaDriverEntryPointQueryResult* driverStatus) {
  return Record(fakecudart::EntryPoint(symbol, funcPtr, cudaVersion, flags, driverStatus, true));
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) {
    return Record(cudaErrorInvalidValue);
  }
  const fakecudart::Driver* d = nullptr;
  if (const cudaError_t e = fakecudart::Ready(&d); e != cudaSuccess) {
    return Record(e);
  }
  fakecudart::ThreadState& t = fakecudart::Thread();
  CUcontext current = nullptr;
  if (!t.device_set && d->legacy.cuCtxGetCurrent(&current) == CUDA_SUCCESS && current != nullptr) {
    CUdevice dev = 0;
    if (const CUresult r = d->legacy.cuCtxGetDevice(&dev); r != CUDA_SUCCESS) {
      return Record(fakecudart::FromDriver(r));
    }
    *device = dev;
    return cudaSuccess;
  }
  *device = t.device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  const fakecudart::Driver* d = nullptr;
  if (const cudaError_t e = fakecudart::Ready(&d); e != cudaSuccess) {
    return Record(e);
  }
  int count = 0;
  if (const CUresult r = d->legacy.cuDeviceGetCount(&count); r != CUDA_SUCCESS) {
    return Record(fakecudart::FromDriver(r));
  }
  if (device < 0 || device >= count) {
    return Record(cudaErrorInvalidDevice);
  }
  fakecudart::ThreadState& t = fakecudart::Thread();
  t.device = device;
  t.device_set = true;
  // Since CUDA 12 cudaSetDevice initialises the device's primary context at once.
  return Record(fakecudart::Context(&d));
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) {
    return Record(cudaErrorInvalidValue);
  }
  *count = 0;
  const fakecudart::Driver* d = nullptr;
  if (const cudaError_t e = fakecudart::Ready(&d); e != cudaSuccess) {
    return Record(e);
  }
  return Record(fakecudart::FromDriver(d->legacy.cuDeviceGetCount(count)));
}

cudaError_t cudaDeviceSynchronize(void) {
  const fakecudart::Driver* d = nullptr;
  if (const cudaError_t e = fakecudart::Context(&d); e != cudaSuccess) {
    return Record(e);
  }
  return Record(fakecudart::FromDriver(d->legacy.cuCtxSynchronize()));
}

cudaError_t cudaGetLastError(void) {
  fakecudart::ThreadState& t = fakecudart::Thread();
  const cudaError_t e = t.last_error;
  t.last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) {
  return fakecudart::Thread().last_error;
}

const char* cudaGetErrorName(cudaError_t error) {
  const char* name = fakecudart::ErrorName(error);
  return name != nullptr ? name : "unrecognized error code";
}

const char* cudaGetErrorString(cudaError_t error) {
  const char* text = fakecudart::ErrorString(error);
  return text != nullptr ? text : "unrecognized error code";
}

cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t* handle, void* devPtr) {
  if (handle == nullptr) {
    return Record(cudaErrorInvalidValue);
  }
  const fakecudart::Driver* d = nullptr;
  if (const cudaError_t e = fakecudart::Context(&d); e != cudaSuccess) {
    return Record(e);
  }
  CUipcMemHandle h{};
  if (const CUresult r = d->legacy.cuIpcGetMemHandle(&h, reinterpret_cast<CUdeviceptr>(devPtr));
      r != CUDA_SUCCESS) {
    return Record(fakecudart::FromDriver(r));
  }
  static_assert(sizeof(h.reserved) == sizeof(handle->reserved));
  std::memcpy(handle->reserved, h.reserved, sizeof(h.reserved));
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* pStream) {
  if (pStream == nullptr) {
    return Record(cudaErrorInvalidValue);
  }
  const fakecudart::Driver* d = nullptr;
  if (const cudaError_t e = fakecudart::Context(&d); e != cudaSuccess) {
    return Record(e);
  }
  return Record(fakecudart::FromDriver(d->legacy.cuStreamCreate(pStream, 0)));
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  const fakecudart::Driver* d = nullptr;
  if (const cudaError_t e = fakecudart::Context(&d); e != cudaSuccess) {
    return Record(e);
  }
  return Record(fakecudart::FromDriver(d->legacy.cuStreamDestroy(stream)));
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  const fakecudart::Driver* d = nullptr;
  if (const cudaError_t e = fakecudart::Context(&d); e != cudaSuccess) {
    return Record(e);
  }
  return Record(fakecudart::FromDriver(d->legacy.cuStreamSynchronize(stream)));
}

cudaError_t cudaStreamSynchronize_ptsz(cudaStream_t stream) {
  const fakecudart::Driver* d = nullptr;
  if (const cudaError_t e = fakecudart::Context(&d); e != cudaSuccess) {
    return Record(e);
  }
  return Record(fakecudart::FromDriver(d->per_thread.cuStreamSynchronize(stream)));
}

cudaError_t cudaRuntimeGetVersion(int* runtimeVersion) {
  if (runtimeVersion == nullptr) {
    return Record(cudaErrorInvalidValue);
  }
  *runtimeVersion = fakecudart::kRuntimeVersion;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int* driverVersion) {
  if (driverVersion == nullptr) {
    return Record(cudaErrorInvalidValue);
  }
  const fakecudart::Driver* d = nullptr;
  if (fakecudart::Loaded(&d) != cudaSuccess) {
    *driverVersion = 0;  // documented: 0 when no driver is installed
    return cudaSuccess;
  }
  return Record(fakecudart::FromDriver(d->legacy.cuDriverGetVersion(driverVersion)));
}

}  // extern "C"
