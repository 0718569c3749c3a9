// ZeroPage: the zero memory per device that every unbacked page of every lazy region aliases, so
// that a stray access (an engine zero-filling its whole cache, a kernel racing an unmap) reads
// zeros and writes into scratch instead of faulting the context. Cleared once at creation.
// (Writes through an alias are not undone: it is scratch, not a guarantee of zeros.)
//
// One handle per alias size: 1, 2, 4 .. chunk_pages pages. The driver maps a handle only whole
// (a mapping of part of a handle is refused), and unmapping costs per mapping (~20 us), so
// aliasing fresh VA in multi-page chunks lets a burst unmap one alias per chunk instead of one
// per page. The memory cost is (2 x chunk_pages - 1) pages.
#pragma once

#include <cuda.h>

#include <cstddef>
#include <vector>

#include "core/common/status.h"
#include "core/driver/handles.h"

namespace kvcached {

class ZeroPage {
 public:
  // Bytes held for a page size and chunk (a power of two number of pages).
  static std::size_t BytesFor(std::size_t page_size, std::size_t chunk_pages) {
    return page_size * (2 * chunk_pages - 1);
  }
  // cuMemCreate of each size, each cleared through a temporary mapping (cuMemsetD8 in `ctx`,
  // synchronised before the mapping goes away).
  static Result<ZeroPage> Create(const driver::Driver& driver, CUdevice device, CUcontext ctx,
                                 std::size_t page_size, std::size_t chunk_pages);

  // [level] = the handle of 2^level pages.
  [[nodiscard]] std::vector<CUmemGenericAllocationHandle> handles() const;

 private:
  explicit ZeroPage(std::vector<driver::PhysicalHandle> handles) : handles_(std::move(handles)) {}
  std::vector<driver::PhysicalHandle> handles_;  // [level] = 2^level pages
};

}  // namespace kvcached
