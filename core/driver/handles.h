// RAII owners of the driver's virtual-memory objects: a VA reservation, a physical allocation
// handle and a mapping. Movable, not copyable; the destructor frees the object.
#pragma once

#include <cuda.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "core/common/status.h"
#include "core/driver/driver.h"

namespace kvcached::driver {
namespace detail {

struct ReservationTraits {
  static constexpr const char* kCall = "cuMemAddressFree";
  static CUresult Destroy(const Api& api, std::uint64_t v, std::size_t size) {
    return api.cuMemAddressFree(v, size);
  }
};
struct HandleTraits {
  static constexpr const char* kCall = "cuMemRelease";
  static CUresult Destroy(const Api& api, std::uint64_t v, std::size_t /*size*/) {
    return api.cuMemRelease(v);
  }
};
struct MappingTraits {
  static constexpr const char* kCall = "cuMemUnmap";
  static CUresult Destroy(const Api& api, std::uint64_t v, std::size_t size) {
    return api.cuMemUnmap(v, size);
  }
};

// One driver object: a 64-bit value (pointer or handle) and its size.
template <class Traits>
class Owned {
 public:
  Owned() = default;
  Owned(const Driver* driver, std::uint64_t value, std::size_t size)
      : driver_(driver), value_(value), size_(size) {}
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  Owned(Owned&& other) noexcept
      : driver_(std::exchange(other.driver_, nullptr)),
        value_(std::exchange(other.value_, 0)),
        size_(std::exchange(other.size_, 0)) {}
  Owned& operator=(Owned&& other) noexcept {
    if (this != &other) {
      DestroyForGood();
      driver_ = std::exchange(other.driver_, nullptr);
      value_ = std::exchange(other.value_, 0);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~Owned() { DestroyForGood(); }

  [[nodiscard]] std::size_t size() const { return size_; }
  // Gives up ownership without freeing (after the driver refused to free it twice).
  void Abandon() { driver_ = nullptr, value_ = 0, size_ = 0; }
  explicit operator bool() const { return driver_ != nullptr; }

  // Frees the object now. On failure the object still owns it, so the caller can keep a
  // consistent state (e.g. a page whose unmap failed stays mapped) and try again later.
  Status Free() {
    if (driver_ == nullptr) return Status::Ok();
    Status st = driver_->Check(Traits::Destroy(driver_->api(), value_, size_), Traits::kCall);
    if (st.ok()) driver_ = nullptr, value_ = 0, size_ = 0;
    return st;
  }
  // Free, tried a second time after a failure (a transient failure would otherwise leak the
  // object for the life of the process). On a second failure the object is still owned.
  Status FreeRetryingOnce() {
    Status st = Free();
    return st.ok() ? st : Free();
  }

 protected:
  [[nodiscard]] std::uint64_t value() const { return value_; }

 private:
  // Destructors retry once; a second failure is logged (by Check) and the object is abandoned.
  void DestroyForGood() {
    if (driver_ == nullptr) return;
    if (!FreeRetryingOnce().ok()) driver_ = nullptr;
  }

  const Driver* driver_ = nullptr;
  std::uint64_t value_ = 0;
  std::size_t size_ = 0;
};

}  // namespace detail

class VaReservation : public detail::Owned<detail::ReservationTraits> {
 public:
  using Owned::Owned;
  // Reserves `size` bytes of device VA aligned to `alignment`.
  static Result<VaReservation> Reserve(const Driver& driver, std::size_t size,
                                       std::size_t alignment);
  [[nodiscard]] CUdeviceptr ptr() const { return value(); }
};

class PhysicalHandle : public detail::Owned<detail::HandleTraits> {
 public:
  using Owned::Owned;
  // cuMemCreate of `size` bytes of pinned device memory on `device`.
  static Result<PhysicalHandle> Create(const Driver& driver, CUdevice device, std::size_t size);
  [[nodiscard]] CUmemGenericAllocationHandle get() const { return value(); }
};

class Mapping : public detail::Owned<detail::MappingTraits> {
 public:
  using Owned::Owned;
  // Maps [0, size) of `handle` at `ptr`. Access is not granted: call SetAccess.
  static Result<Mapping> Map(const Driver& driver, CUdeviceptr ptr, std::size_t size,
                             CUmemGenericAllocationHandle handle);
  [[nodiscard]] CUdeviceptr ptr() const { return value(); }
};

// Grants `device` read-write access to [ptr, ptr+size) (one call: its cost is per call).
Status SetAccess(const Driver& driver, CUdevice device, CUdeviceptr ptr, std::size_t size);
// The minimum physical allocation granularity on `device` (2 MiB on current GPUs).
Result<std::size_t> Granularity(const Driver& driver, CUdevice device);

}  // namespace kvcached::driver
