#include "core/region/region.h"

#include <fmt/format.h>

namespace kvcached {

Status Region::PageSpan(std::uint64_t offset, std::uint64_t length, std::size_t& first,
                        std::size_t& end) const {
  if (length == 0) {
    return {Errc::kInvalid, fmt::format("empty range at 0x{:x}", base_ + offset)};
  }
  if (offset >= size_ || length > size_ - offset) {
    return {Errc::kInvalid, fmt::format("range [0x{:x}, +{}) is outside region 0x{:x} of {} bytes",
                                        base_ + offset, length, base_, size_)};
  }
  first = static_cast<std::size_t>(offset / page_size_);
  end = static_cast<std::size_t>((offset + length - 1) / page_size_ + 1);
  return Status::Ok();
}

Status Region::Gone() const {
  return {Errc::kNotFound, fmt::format("region 0x{:x} was destroyed", base_)};
}

std::uint64_t RoundUpToPage(std::uint64_t size, std::uint64_t page) {
  std::uint64_t rem = size % page;
  if (rem == 0) return size;
  std::uint64_t add = page - rem;
  return size > UINT64_MAX - add ? 0 : size + add;
}

}  // namespace kvcached
