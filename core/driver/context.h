// Contexts: a retained primary context per device, and a scope that makes it current on the
// calling thread for driver calls that need one (cuMemsetD8, cuCtxSynchronize).
#pragma once

#include <cuda.h>

#include <utility>

#include "core/common/status.h"
#include "core/driver/driver.h"

namespace kvcached::driver {

// The device's primary context (the one the CUDA runtime and PyTorch use), retained for the
// life of this object so that it is not destroyed under our mappings.
class PrimaryContext {
 public:
  PrimaryContext() = default;
  static Result<PrimaryContext> Retain(const Driver& driver, CUdevice device);
  PrimaryContext(const PrimaryContext&) = delete;
  PrimaryContext& operator=(const PrimaryContext&) = delete;
  PrimaryContext(PrimaryContext&& other) noexcept
      : driver_(std::exchange(other.driver_, nullptr)),
        device_(other.device_),
        ctx_(std::exchange(other.ctx_, nullptr)) {}
  PrimaryContext& operator=(PrimaryContext&& other) noexcept;
  ~PrimaryContext() { Reset(); }

  [[nodiscard]] CUcontext get() const { return ctx_; }
  [[nodiscard]] CUdevice device() const { return device_; }

 private:
  PrimaryContext(const Driver* driver, CUdevice device, CUcontext ctx)
      : driver_(driver), device_(device), ctx_(ctx) {}
  void Reset();

  const Driver* driver_ = nullptr;
  CUdevice device_ = 0;
  CUcontext ctx_ = nullptr;
};

// Makes `ctx` current on this thread unless it already is, and restores the previous context
// (possibly none) when the scope ends. Switching also when another device's context is current
// (not only when none is) keeps work such as the zero-page memset on the right device.
class ScopedContext {
 public:
  static Result<ScopedContext> Enter(const Driver& driver, CUcontext ctx);
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;
  ScopedContext(ScopedContext&& other) noexcept
      : driver_(std::exchange(other.driver_, nullptr)), previous_(other.previous_) {}
  ScopedContext& operator=(ScopedContext&&) = delete;
  ~ScopedContext();

 private:
  ScopedContext(const Driver* driver, CUcontext previous) : driver_(driver), previous_(previous) {}
  const Driver* driver_ = nullptr;  // null: nothing to restore
  CUcontext previous_ = nullptr;
};

}  // namespace kvcached::driver
