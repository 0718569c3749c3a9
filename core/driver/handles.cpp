#include "core/driver/handles.h"

namespace kvcached::driver {
namespace {

CUmemAllocationProp DeviceProp(CUdevice device) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  return prop;
}

}  // namespace

Result<VaReservation> VaReservation::Reserve(const Driver& driver, std::size_t size,
                                             std::size_t alignment) {
  CUdeviceptr ptr = 0;
  KVC_RETURN_IF_ERROR(driver.Check(driver.api().cuMemAddressReserve(&ptr, size, alignment, 0, 0),
                                   "cuMemAddressReserve"));
  return VaReservation(&driver, ptr, size);
}

Result<PhysicalHandle> PhysicalHandle::Create(const Driver& driver, CUdevice device,
                                              std::size_t size) {
  CUmemAllocationProp prop = DeviceProp(device);
  CUmemGenericAllocationHandle handle = 0;
  KVC_RETURN_IF_ERROR(
      driver.Check(driver.api().cuMemCreate(&handle, size, &prop, 0), "cuMemCreate"));
  return PhysicalHandle(&driver, handle, size);
}

Result<Mapping> Mapping::Map(const Driver& driver, CUdeviceptr ptr, std::size_t size,
                             CUmemGenericAllocationHandle handle) {
  KVC_RETURN_IF_ERROR(driver.Check(driver.api().cuMemMap(ptr, size, 0, handle, 0), "cuMemMap"));
  return Mapping(&driver, ptr, size);
}

Status SetAccess(const Driver& driver, CUdevice device, CUdeviceptr ptr, std::size_t size) {
  CUmemAccessDesc desc{};
  desc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  desc.location.id = device;
  desc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  return driver.Check(driver.api().cuMemSetAccess(ptr, size, &desc, 1), "cuMemSetAccess");
}

Result<std::size_t> Granularity(const Driver& driver, CUdevice device) {
  CUmemAllocationProp prop = DeviceProp(device);
  std::size_t granularity = 0;
  KVC_RETURN_IF_ERROR(driver.Check(driver.api().cuMemGetAllocationGranularity(
                                       &granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM),
                                   "cuMemGetAllocationGranularity"));
  if (granularity == 0) return Status(Errc::kDriver, "cuMemGetAllocationGranularity returned 0");
  return granularity;
}

}  // namespace kvcached::driver
