#include "core/pool/zero_page.h"

#include "core/driver/context.h"

namespace kvcached {
namespace {

Result<driver::PhysicalHandle> CreateCleared(const driver::Driver& driver, CUdevice device,
                                             CUcontext ctx, std::size_t size) {
  auto handle = driver::PhysicalHandle::Create(driver, device, size);
  if (!handle.ok()) return handle.status();
  // Destruction order (mapping, then VA) is the reverse of declaration.
  auto va = driver::VaReservation::Reserve(driver, size, size);
  if (!va.ok()) return va.status();
  auto map = driver::Mapping::Map(driver, va.value().ptr(), size, handle.value().get());
  if (!map.ok()) return map.status();
  KVC_RETURN_IF_ERROR(driver::SetAccess(driver, device, va.value().ptr(), size));
  auto scope = driver::ScopedContext::Enter(driver, ctx);
  if (!scope.ok()) return scope.status();
  KVC_RETURN_IF_ERROR(
      driver.Check(driver.api().cuMemsetD8(va.value().ptr(), 0, size), "cuMemsetD8"));
  // The memset may still be running: it must finish before the mapping is removed.
  KVC_RETURN_IF_ERROR(driver.Check(driver.api().cuCtxSynchronize(), "cuCtxSynchronize"));
  return std::move(handle).value();
}

}  // namespace

Result<ZeroPage> ZeroPage::Create(const driver::Driver& driver, CUdevice device, CUcontext ctx,
                                  std::size_t page_size, std::size_t chunk_pages) {
  std::vector<driver::PhysicalHandle> handles;
  for (std::size_t pages = 1; pages <= chunk_pages; pages *= 2) {
    auto h = CreateCleared(driver, device, ctx, pages * page_size);
    if (!h.ok()) return h.status();  // the handles made so far are released
    handles.push_back(std::move(h).value());
  }
  return ZeroPage(std::move(handles));
}

std::vector<CUmemGenericAllocationHandle> ZeroPage::handles() const {
  std::vector<CUmemGenericAllocationHandle> out;
  out.reserve(handles_.size());
  for (const auto& h : handles_) out.push_back(h.get());
  return out;
}

}  // namespace kvcached
