// The virtual memory management API on host memory: reservations are PROT_NONE anonymous VA,
// physical handles are memfds, mappings are MAP_SHARED|MAP_FIXED views of them that start with
// no access (as on the GPU, where every new mapping needs cuMemSetAccess).
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "tests/fakecuda/fake_state.h"

namespace fakecuda {
namespace {

using MapIt = std::map<std::uintptr_t, Mapping>::iterator;

bool Aligned(std::uint64_t v) {
  return v % kGranularity == 0;
}

CUresult ValidProp(const State& s, const CUmemAllocationProp* prop) {
  if (prop == nullptr || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
      prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (const CUresult r = ValidDevice(s, prop->location.id); r != CUDA_SUCCESS) {
    return r;
  }
  if (prop->requestedHandleTypes != CU_MEM_HANDLE_TYPE_NONE &&
      prop->requestedHandleTypes != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) {
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  return CUDA_SUCCESS;
}

// Restores [p, p + size) to reserved-but-unbacked VA: touching it faults.
bool MakeReservedVa(std::uintptr_t p, std::size_t size) {
  void* r = ::mmap(reinterpret_cast<void*>(p), size, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
  return r != MAP_FAILED;
}

// Reserves `size` bytes of PROT_NONE VA aligned to `align`, at `hint` if that is free.
std::uintptr_t ReserveVa(std::size_t size, std::size_t align, std::uintptr_t hint) {
  constexpr int kFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
  if (hint != 0 && hint % align == 0) {
    void* at =
        ::mmap(reinterpret_cast<void*>(hint), size, PROT_NONE, kFlags | MAP_FIXED_NOREPLACE, -1, 0);
    if (at == reinterpret_cast<void*>(hint)) {
      return hint;
    }
    if (at != MAP_FAILED) {  // a kernel without MAP_FIXED_NOREPLACE took it as a mere hint
      ::munmap(at, size);
    }
  }
  if (size > SIZE_MAX - align) {
    return 0;
  }
  void* raw = ::mmap(nullptr, size + align, PROT_NONE, kFlags, -1, 0);
  if (raw == MAP_FAILED) {
    return 0;
  }
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = (start + align - 1) / align * align;
  if (aligned > start) {
    ::munmap(raw, aligned - start);
  }
  const std::uintptr_t tail = start + size + align - (aligned + size);
  if (tail > 0) {
    ::munmap(reinterpret_cast<void*>(aligned + size), tail);
  }
  return aligned;
}

// The mapping holding byte `p`, or end().
MapIt MappingAt(State& s, std::uintptr_t p) {
  auto it = s.mappings.upper_bound(p);
  if (it == s.mappings.begin()) {
    return s.mappings.end();
  }
  --it;
  return p < it->first + it->second.size ? it : s.mappings.end();
}

bool InOneReservation(const State& s, std::uintptr_t p, std::size_t size) {
  auto it = s.reservations.upper_bound(p);
  if (it == s.reservations.begin()) {
    return false;
  }
  --it;
  return p >= it->first && p + size <= it->first + it->second;
}

bool OverlapsMapping(State& s, std::uintptr_t p, std::size_t size) {
  auto next = s.mappings.lower_bound(p);
  if (next != s.mappings.end() && next->first < p + size) {
    return true;
  }
  return MappingAt(s, p) != s.mappings.end();
}

// The mappings that cover every byte of [p, p + size), in order; false if any byte is unmapped.
// With `whole`, the range must also start and end on mapping boundaries.
bool Covering(State& s, std::uintptr_t p, std::size_t size, bool whole, std::vector<MapIt>* out) {
  out->clear();
  auto it = MappingAt(s, p);
  if (it == s.mappings.end() || (whole && it->first != p)) {
    return false;
  }
  const std::uintptr_t end = p + size;
  std::uintptr_t covered = it->first;
  while (covered < end) {
    if (it == s.mappings.end() || it->first != covered) {
      return false;  // a hole
    }
    out->push_back(it);
    covered = it->first + it->second.size;
    ++it;
  }
  return !whole || covered == end;
}

int ProtOf(unsigned long long flags) {
  switch (flags) {
    case CU_MEM_ACCESS_FLAGS_PROT_READWRITE:
      return PROT_READ | PROT_WRITE;
    case CU_MEM_ACCESS_FLAGS_PROT_READ:
      return PROT_READ;
    default:
      return PROT_NONE;
  }
}

}  // namespace
}  // namespace fakecuda

using fakecuda::kGranularity;

extern "C" {

CUresult cuMemGetAllocationGranularity(size_t* granularity, const CUmemAllocationProp* prop,
                                       CUmemAllocationGranularity_flags option) {
  FAKECUDA_ENTER(c, cuMemGetAllocationGranularity);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (granularity == nullptr || (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
                                 option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (const CUresult r = fakecuda::ValidProp(c.state(), prop); r != CUDA_SUCCESS) {
    return r;
  }
  *granularity = kGranularity;
  return CUDA_SUCCESS;
}

CUresult cuMemAddressReserve(CUdeviceptr* ptr, size_t size, size_t alignment, CUdeviceptr addr,
                             unsigned long long flags) {
  FAKECUDA_ENTER(c, cuMemAddressReserve);
  if (const CUresult r = fakecuda::RequireInit(c.state()); r != CUDA_SUCCESS) {
    return r;
  }
  if (ptr == nullptr || size == 0 || !fakecuda::Aligned(size) || flags != 0 ||
      (alignment & (alignment - 1)) != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  const std::size_t align = std::max(alignment, kGranularity);
  const std::uintptr_t base = fakecuda::ReserveVa(size, align, addr);
  if (base == 0) {
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  c.state().reservations.emplace(base, size);
  *ptr = base;
  return CUDA_SUCCESS;
}

CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
  FAKECUDA_ENTER(c, cuMemAddressFree);
  fakecuda::State& s = c.state();
  if (const CUresult r = fakecuda::RequireInit(s); r != CUDA_SUCCESS) {
    return r;
  }
  auto it = s.reservations.find(ptr);
  if (it == s.reservations.end() || it->second != size) {
    return CUDA_ERROR_INVALID_VALUE;  // must name exactly one reservation
  }
  if (fakecuda::OverlapsMapping(s, ptr, size)) {
    return CUDA_ERROR_INVALID_VALUE;  // still mapped inside: unmap first
  }
  ::munmap(reinterpret_cast<void*>(ptr), size);
  s.reservations.erase(it);
  return CUDA_SUCCESS;
}

CUresult cuMemCreate(CUmemGenericAllocationHandle* handle, size_t size,
                     const CUmemAllocationProp* prop, unsigned long long flags) {
  FAKECUDA_ENTER(c, cuMemCreate);
  fakecuda::State& s = c.state();
  if (const CUresult r = fakecuda::RequireInit(s); r != CUDA_SUCCESS) {
    return r;
  }
  if (handle == nullptr || size == 0 || !fakecuda::Aligned(size) || flags != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (const CUresult r = fakecuda::ValidProp(s, prop); r != CUDA_SUCCESS) {
    return r;
  }
  if (const CUresult r = fakecuda::Charge(s, prop->location.id, size); r != CUDA_SUCCESS) {
    return r;
  }
  const int fd = ::memfd_create("fakecuda-vmm", MFD_CLOEXEC);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    if (fd >= 0) {
      ::close(fd);
    }
    fakecuda::Uncharge(s, prop->location.id, size);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  const CUmemGenericAllocationHandle h = s.next_handle++;
  fakecuda::Handle& rec = s.handles[h];
  rec.fd = fd;
  rec.size = size;
  rec.prop = *prop;
  rec.refs = 1;
  *handle = h;
  return CUDA_SUCCESS;
}

CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
  FAKECUDA_ENTER(c, cuMemRelease);
  fakecuda::State& s = c.state();
  if (const CUresult r = fakecuda::RequireInit(s); r != CUDA_SUCCESS) {
    return r;
  }
  auto it = s.handles.find(handle);
  if (it == s.handles.end() || it->second.refs == 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  --it->second.refs;
  fakecuda::MaybeDestroyHandle(s, handle);  // memory stays while a mapping uses it
  return CUDA_SUCCESS;
}

CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                  unsigned long long flags) {
  FAKECUDA_ENTER(c, cuMemMap);
  fakecuda::State& s = c.state();
  if (const CUresult r = fakecuda::RequireInit(s); r != CUDA_SUCCESS) {
    return r;
  }
  auto h = s.handles.find(handle);
  if (h == s.handles.end() || h->second.refs == 0 || offset != 0 || flags != 0 || size == 0 ||
      !fakecuda::Aligned(ptr) || !fakecuda::Aligned(size) || size > h->second.size) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (size != h->second.size) {
    return CUDA_ERROR_NOT_SUPPORTED;  // as the H100's driver: a handle is only mapped whole
  }
  if (!fakecuda::InOneReservation(s, ptr, size) || fakecuda::OverlapsMapping(s, ptr, size)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  void* at = ::mmap(reinterpret_cast<void*>(ptr), size, PROT_NONE, MAP_SHARED | MAP_FIXED,
                    h->second.fd, 0);
  if (at == MAP_FAILED) {
    fakecuda::MakeReservedVa(ptr, size);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  fakecuda::Mapping& m = s.mappings[ptr];
  m.size = size;
  m.handle = handle;
  m.access.assign(size / kGranularity, CU_MEM_ACCESS_FLAGS_PROT_NONE);
  ++h->second.maps;
  return CUDA_SUCCESS;
}

CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
  FAKECUDA_ENTER(c, cuMemUnmap);
  fakecuda::State& s = c.state();
  if (const CUresult r = fakecuda::RequireInit(s); r != CUDA_SUCCESS) {
    return r;
  }
  std::vector<fakecuda::MapIt> maps;
  if (size == 0 || !fakecuda::Covering(s, ptr, size, /*whole=*/true, &maps)) {
    return CUDA_ERROR_INVALID_VALUE;  // never part of a mapping, never a hole
  }
  for (auto it : maps) {
    fakecuda::MakeReservedVa(it->first, it->second.size);
    const CUmemGenericAllocationHandle h = it->second.handle;
    --s.handles.at(h).maps;
    s.mappings.erase(it);
    fakecuda::MaybeDestroyHandle(s, h);
  }
  return CUDA_SUCCESS;
}

CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count) {
  FAKECUDA_ENTER(c, cuMemSetAccess);
  fakecuda::State& s = c.state();
  if (const CUresult r = fakecuda::RequireInit(s); r != CUDA_SUCCESS) {
    return r;
  }
  if (desc == nullptr || count == 0 || size == 0 || !fakecuda::Aligned(ptr) ||
      !fakecuda::Aligned(size)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  // One host address space serves every device: the widest access granted wins.
  unsigned long long flags = CU_MEM_ACCESS_FLAGS_PROT_NONE;
  for (std::size_t i = 0; i < count; ++i) {
    if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    if (const CUresult r = fakecuda::ValidDevice(s, desc[i].location.id); r != CUDA_SUCCESS) {
      return r;
    }
    const unsigned long long f = desc[i].flags;
    if (f != CU_MEM_ACCESS_FLAGS_PROT_NONE && f != CU_MEM_ACCESS_FLAGS_PROT_READ &&
        f != CU_MEM_ACCESS_FLAGS_PROT_READWRITE) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    flags = std::max(flags, f);
  }
  std::vector<fakecuda::MapIt> maps;
  if (!fakecuda::Covering(s, ptr, size, /*whole=*/false, &maps)) {
    return CUDA_ERROR_INVALID_VALUE;  // every byte must be mapped
  }
  if (::mprotect(reinterpret_cast<void*>(ptr), size, fakecuda::ProtOf(flags)) != 0) {
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  const std::uintptr_t end = ptr + size;
  for (auto it : maps) {
    const std::uintptr_t lo = std::max<std::uintptr_t>(it->first, ptr);
    const std::uintptr_t hi = std::min<std::uintptr_t>(it->first + it->second.size, end);
    for (std::uintptr_t g = lo; g < hi; g += kGranularity) {
      it->second.access.at((g - it->first) / kGranularity) = static_cast<unsigned char>(flags);
    }
  }
  return CUDA_SUCCESS;
}

CUresult cuMemGetAccess(unsigned long long* flags, const CUmemLocation* location, CUdeviceptr ptr) {
  FAKECUDA_ENTER(c, cuMemGetAccess);
  fakecuda::State& s = c.state();
  if (const CUresult r = fakecuda::RequireInit(s); r != CUDA_SUCCESS) {
    return r;
  }
  if (flags == nullptr || location == nullptr || location->type != CU_MEM_LOCATION_TYPE_DEVICE) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (const CUresult r = fakecuda::ValidDevice(s, location->id); r != CUDA_SUCCESS) {
    return r;
  }
  auto it = fakecuda::MappingAt(s, ptr);
  if (it == s.mappings.end()) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *flags = it->second.access.at((ptr - it->first) / kGranularity);
  return CUDA_SUCCESS;
}

CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle* handle, void* addr) {
  FAKECUDA_ENTER(c, cuMemRetainAllocationHandle);
  fakecuda::State& s = c.state();
  if (const CUresult r = fakecuda::RequireInit(s); r != CUDA_SUCCESS) {
    return r;
  }
  auto it = fakecuda::MappingAt(s, reinterpret_cast<std::uintptr_t>(addr));
  if (handle == nullptr || it == s.mappings.end()) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  ++s.handles.at(it->second.handle).refs;
  *handle = it->second.handle;
  return CUDA_SUCCESS;
}

CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp* prop,
                                                CUmemGenericAllocationHandle handle) {
  FAKECUDA_ENTER(c, cuMemGetAllocationPropertiesFromHandle);
  fakecuda::State& s = c.state();
  if (const CUresult r = fakecuda::RequireInit(s); r != CUDA_SUCCESS) {
    return r;
  }
  auto it = s.handles.find(handle);
  if (prop == nullptr || it == s.handles.end() || it->second.refs == 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *prop = it->second.prop;
  return CUDA_SUCCESS;
}

}  // extern "C"
