#include "core/driver/context.h"

namespace kvcached::driver {

Result<PrimaryContext> PrimaryContext::Retain(const Driver& driver, CUdevice device) {
  CUcontext ctx = nullptr;
  KVC_RETURN_IF_ERROR(driver.Check(driver.api().cuDevicePrimaryCtxRetain(&ctx, device),
                                   "cuDevicePrimaryCtxRetain"));
  return PrimaryContext(&driver, device, ctx);
}

PrimaryContext& PrimaryContext::operator=(PrimaryContext&& other) noexcept {
  if (this != &other) {
    Reset();
    driver_ = std::exchange(other.driver_, nullptr);
    device_ = other.device_;
    ctx_ = std::exchange(other.ctx_, nullptr);
  }
  return *this;
}

void PrimaryContext::Reset() {
  if (driver_ == nullptr) return;
  (void)driver_->Check(driver_->api().cuDevicePrimaryCtxRelease(device_),
                       "cuDevicePrimaryCtxRelease");
  driver_ = nullptr;
  ctx_ = nullptr;
}

Result<ScopedContext> ScopedContext::Enter(const Driver& driver, CUcontext ctx) {
  CUcontext current = nullptr;
  KVC_RETURN_IF_ERROR(driver.Check(driver.api().cuCtxGetCurrent(&current), "cuCtxGetCurrent"));
  if (current == ctx) return ScopedContext(nullptr, nullptr);
  KVC_RETURN_IF_ERROR(driver.Check(driver.api().cuCtxSetCurrent(ctx), "cuCtxSetCurrent"));
  return ScopedContext(&driver, current);
}

ScopedContext::~ScopedContext() {
  if (driver_ == nullptr) return;
  (void)driver_->Check(driver_->api().cuCtxSetCurrent(previous_), "cuCtxSetCurrent");
}

}  // namespace kvcached::driver
