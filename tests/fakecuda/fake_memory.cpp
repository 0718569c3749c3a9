// cuMemAlloc-family memory (host anonymous memory, charged in 2 MiB pages like the device's),
// memory info, address ranges, pointer attributes and legacy IPC handles.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <limits>

#include "tests/fakecuda/fake_state.h"

namespace fakecuda {
namespace {

std::size_t RoundUp(std::size_t v) {
  return (v + kGranularity - 1) / kGranularity * kGranularity;
}

// Read-write host memory aligned like a device allocation.
std::uintptr_t MapAligned(std::size_t size) {
  void* raw = ::mmap(nullptr, size + kGranularity, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    return 0;
  }
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = RoundUp(start);
  if (aligned > start) {
    ::munmap(raw, aligned - start);
  }
  const std::uintptr_t tail = start + size + kGranularity - (aligned + size);
  if (tail > 0) {
    ::munmap(reinterpret_cast<void*>(aligned + size), tail);
  }
  return aligned;
}

CUresult Alloc(State& s, CUdeviceptr* dptr, std::size_t bytesize) {
  int dev = 0;
  if (const CUresult r = RequireContext(s, &dev); r != CUDA_SUCCESS) {
    return r;
  }
  if (dptr == nullptr || bytesize == 0 || bytesize > SIZE_MAX - 2 * kGranularity) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  const std::size_t charged = RoundUp(bytesize);
  if (const CUresult r = Charge(s, dev, charged); r != CUDA_SUCCESS) {
    return r;
  }
  const std::uintptr_t p = MapAligned(charged);
  if (p == 0) {
    Uncharge(s, dev, charged);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  s.allocations[p] = Allocation{bytesize, charged, charged, dev};
  *dptr = p;
  return CUDA_SUCCESS;
}

CUresult Free(State& s, CUdeviceptr dptr) {
  int dev = 0;
  if (const CUresult r = RequireContext(s, &dev); r != CUDA_SUCCESS) {
    return r;
  }
  auto it = s.allocations.find(dptr);
  if (it == s.allocations.end()) {
    return CUDA_ERROR_INVALID_VALUE;  // not the start of a live cuMemAlloc allocation
  }
  ::munmap(reinterpret_cast<void*>(it->first), it->second.mapped);
  Uncharge(s, it->second.device, it->second.charged);
  s.allocations.erase(it);
  return CUDA_SUCCESS;
}

CUresult MemGetInfo(State& s, std::uint64_t* free, std::uint64_t* total) {
  int dev = 0;
  if (const CUresult r = RequireContext(s, &dev); r != CUDA_SUCCESS) {
    return r;
  }
  const Device& d = s.devices.at(static_cast<std::size_t>(dev));
  *free = d.total - d.used;
  *total = d.total;
  return CUDA_SUCCESS;
}

// cuMemGetInfo for either ABI: sizes clamped to T (the pre-3.2 entry point has 32-bit sizes).
template <class T>
CUresult MemGetInfoAs(State& s, T* free, T* total) {
  if (free == nullptr || total == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::uint64_t f = 0;
  std::uint64_t t = 0;
  const CUresult r = MemGetInfo(s, &f, &t);
  if (r == CUDA_SUCCESS) {
    constexpr std::uint64_t kMax = std::numeric_limits<T>::max();
    *free = static_cast<T>(std::min(f, kMax));
    *total = static_cast<T>(std::min(t, kMax));
  }
  return r;
}

// What a device pointer belongs to: a cuMemAlloc allocation or a VMM mapping.
struct Owner {
  bool found = false;
  bool vmm = false;
  std::uintptr_t base = 0;
  std::size_t size = 0;
  int device = 0;
};

Owner FindOwner(const State& s, std::uintptr_t p) {
  Owner o;
  if (auto it = s.allocations.upper_bound(p); it != s.allocations.begin()) {
    --it;
    if (p < it->first + it->second.size) {
      return {true, false, it->first, it->second.size, it->second.device};
    }
  }
  if (auto it = s.mappings.upper_bound(p); it != s.mappings.begin()) {
    --it;
    if (p < it->first + it->second.size) {
      const Handle& h = s.handles.at(it->second.handle);
      return {true, true, it->first, it->second.size, h.prop.location.id};
    }
  }
  return o;
}

}  // namespace
}  // namespace fakecuda

extern "C" {

CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
  FAKECUDA_ENTER(c, cuMemGetInfo);
  return fakecuda::MemGetInfoAs(c.state(), free, total);
}

// The pre-3.2 ABI: 32-bit sizes, clamped.
CUresult cuMemGetInfo(unsigned int* free, unsigned int* total) {
  FAKECUDA_ENTER(c, cuMemGetInfo);
  return fakecuda::MemGetInfoAs(c.state(), free, total);
}

CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytesize) {
  FAKECUDA_ENTER(c, cuMemAlloc);
  return fakecuda::Alloc(c.state(), dptr, bytesize);
}

CUresult cuMemFree_v2(CUdeviceptr dptr) {
  FAKECUDA_ENTER(c, cuMemFree);
  return fakecuda::Free(c.state(), dptr);
}

static CUresult AllocAsync(CUdeviceptr* dptr, size_t bytesize, CUstream hStream) {
  FAKECUDA_ENTER(c, cuMemAllocAsync);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (const CUresult r = fakecuda::ValidStream(c.state(), hStream); r != CUDA_SUCCESS) {
    return r;
  }
  return fakecuda::Alloc(c.state(), dptr, bytesize);
}

CUresult cuMemAllocAsync(CUdeviceptr* dptr, size_t bytesize, CUstream hStream) {
  return AllocAsync(dptr, bytesize, hStream);
}
CUresult cuMemAllocAsync_ptsz(CUdeviceptr* dptr, size_t bytesize, CUstream hStream) {
  return AllocAsync(dptr, bytesize, hStream);
}

static CUresult FreeAsync(CUdeviceptr dptr, CUstream hStream) {
  FAKECUDA_ENTER(c, cuMemFreeAsync);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (const CUresult r = fakecuda::ValidStream(c.state(), hStream); r != CUDA_SUCCESS) {
    return r;
  }
  return fakecuda::Free(c.state(), dptr);
}

CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream) {
  return FreeAsync(dptr, hStream);
}
CUresult cuMemFreeAsync_ptsz(CUdeviceptr dptr, CUstream hStream) {
  return FreeAsync(dptr, hStream);
}

CUresult cuMemGetAddressRange_v2(CUdeviceptr* pbase, size_t* psize, CUdeviceptr dptr) {
  FAKECUDA_ENTER(c, cuMemGetAddressRange);
  int dev = 0;
  if (const CUresult r = fakecuda::RequireContext(c.state(), &dev); r != CUDA_SUCCESS) {
    return r;
  }
  const fakecuda::Owner o = fakecuda::FindOwner(c.state(), dptr);
  if (!o.found) {
    return CUDA_ERROR_NOT_FOUND;
  }
  if (pbase != nullptr) {
    *pbase = o.base;
  }
  if (psize != nullptr) {
    *psize = o.size;
  }
  return CUDA_SUCCESS;
}

CUresult cuPointerGetAttribute(void* data, CUpointer_attribute attribute, CUdeviceptr ptr) {
  FAKECUDA_ENTER(c, cuPointerGetAttribute);
  fakecuda::State& s = c.state();
  if (const CUresult r = fakecuda::RequireInit(s); r != CUDA_SUCCESS) {
    return r;
  }
  if (data == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  const fakecuda::Owner o = fakecuda::FindOwner(s, ptr);
  if (!o.found) {
    return CUDA_ERROR_INVALID_VALUE;  // not device memory the driver knows
  }
  switch (attribute) {
    case CU_POINTER_ATTRIBUTE_CONTEXT: {
      // VMM memory belongs to no context.
      CUcontext ctx = o.vmm ? nullptr : &s.devices.at(static_cast<std::size_t>(o.device)).primary;
      std::memcpy(data, &ctx, sizeof(ctx));
      return CUDA_SUCCESS;
    }
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: {
      const unsigned int type = CU_MEMORYTYPE_DEVICE;
      std::memcpy(data, &type, sizeof(type));
      return CUDA_SUCCESS;
    }
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: {
      const CUdeviceptr p = ptr;
      std::memcpy(data, &p, sizeof(p));
      return CUDA_SUCCESS;
    }
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: {
      std::memcpy(data, &o.device, sizeof(o.device));
      return CUDA_SUCCESS;
    }
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: {
      const CUdeviceptr base = o.base;
      std::memcpy(data, &base, sizeof(base));
      return CUDA_SUCCESS;
    }
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE: {
      const size_t size = o.size;
      std::memcpy(data, &size, sizeof(size));
      return CUDA_SUCCESS;
    }
    case CU_POINTER_ATTRIBUTE_IS_MANAGED: {
      const unsigned int managed = 0;
      std::memcpy(data, &managed, sizeof(managed));
      return CUDA_SUCCESS;
    }
    case CU_POINTER_ATTRIBUTE_MAPPED:
    case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE: {
      const bool value = attribute == CU_POINTER_ATTRIBUTE_MAPPED || !o.vmm;
      std::memcpy(data, &value, sizeof(value));
      return CUDA_SUCCESS;
    }
    default:
      return CUDA_ERROR_NOT_SUPPORTED;  // the fake answers only the attributes above
  }
}

CUresult cuIpcGetMemHandle(CUipcMemHandle* pHandle, CUdeviceptr dptr) {
  FAKECUDA_ENTER(c, cuIpcGetMemHandle);
  int dev = 0;
  if (const CUresult r = fakecuda::RequireContext(c.state(), &dev); r != CUDA_SUCCESS) {
    return r;
  }
  const fakecuda::Owner o = fakecuda::FindOwner(c.state(), dptr);
  // As on the real driver, legacy IPC works only on cuMemAlloc memory, never on VMM mappings.
  if (pHandle == nullptr || !o.found || o.vmm) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  CUipcMemHandle h{};
  const char magic[8] = {'F', 'A', 'K', 'E', 'C', 'U', 'D', 'A'};
  const auto pid = static_cast<std::uint64_t>(::getpid());
  const std::uint64_t base = o.base;
  const std::uint64_t size = o.size;
  std::memcpy(h.reserved, magic, sizeof(magic));
  std::memcpy(h.reserved + 8, &pid, sizeof(pid));
  std::memcpy(h.reserved + 16, &base, sizeof(base));
  std::memcpy(h.reserved + 24, &size, sizeof(size));
  *pHandle = h;
  return CUDA_SUCCESS;
}

}  // extern "C"
