// ZeroPage: the one physical page per device that every unbacked page of every lazy region
// aliases, so that a stray access (an engine zero-filling its whole cache, a kernel racing an
// unmap) reads zeros and writes into scratch instead of faulting the context. Cleared once at
// creation. (Writes through an alias are not undone: it is scratch, not a guarantee of zeros.)
#pragma once

#include <cuda.h>

#include <cstddef>

#include "core/common/status.h"
#include "core/driver/handles.h"

namespace kvcached {

class ZeroPage {
 public:
  // cuMemCreate of one page, then clears it through a temporary mapping (cuMemsetD8 in `ctx`,
  // synchronised before the mapping goes away).
  static Result<ZeroPage> Create(const driver::Driver& driver, CUdevice device, CUcontext ctx,
                                 std::size_t page_size);

  [[nodiscard]] CUmemGenericAllocationHandle handle() const { return handle_.get(); }
  [[nodiscard]] std::size_t size() const { return handle_.size(); }

 private:
  explicit ZeroPage(driver::PhysicalHandle handle) : handle_(std::move(handle)) {}
  driver::PhysicalHandle handle_;
};

}  // namespace kvcached
