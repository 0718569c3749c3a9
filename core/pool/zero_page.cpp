#include "core/pool/zero_page.h"

#include "core/driver/context.h"

namespace kvcached {

Result<ZeroPage> ZeroPage::Create(const driver::Driver& driver, CUdevice device, CUcontext ctx,
                                  std::size_t page_size) {
  auto handle = driver::PhysicalHandle::Create(driver, device, page_size);
  if (!handle.ok()) return handle.status();
  {
    // Destruction order (mapping, then VA) is the reverse of declaration.
    auto va = driver::VaReservation::Reserve(driver, page_size, page_size);
    if (!va.ok()) return va.status();
    auto map = driver::Mapping::Map(driver, va.value().ptr(), page_size, handle.value().get());
    if (!map.ok()) return map.status();
    KVC_RETURN_IF_ERROR(driver::SetAccess(driver, device, va.value().ptr(), page_size));
    auto scope = driver::ScopedContext::Enter(driver, ctx);
    if (!scope.ok()) return scope.status();
    KVC_RETURN_IF_ERROR(
        driver.Check(driver.api().cuMemsetD8(va.value().ptr(), 0, page_size), "cuMemsetD8"));
    // The memset may still be running: it must finish before the mapping is removed.
    KVC_RETURN_IF_ERROR(driver.Check(driver.api().cuCtxSynchronize(), "cuCtxSynchronize"));
  }
  return ZeroPage(std::move(handle).value());
}

}  // namespace kvcached
