// The domain types shared by the regions, the page pool and the Runtime facade: what a region is,
// the state of one of its pages, a byte range, and a region's description.
#pragma once

#include <cstdint>

namespace kvcached {

enum class RegionKind : std::uint8_t { kLazy = 0, kEager = 1 };
enum class PageState : std::uint8_t { kZero = 0, kMappedFree = 1, kInUse = 2 };

struct ByteRange {
  std::uint64_t addr = 0;
  std::uint64_t length = 0;
};

struct RegionInfo {
  std::uint64_t base = 0;
  std::uint64_t size = 0;
  std::uint64_t page_size = 0;
  std::uint64_t pages = 0;
  std::uint64_t zero_pages = 0;
  std::uint64_t mapped_free_pages = 0;
  std::uint64_t in_use_pages = 0;
  int device = 0;
  RegionKind kind = RegionKind::kLazy;
};

}  // namespace kvcached
