#include "core/region/page_table.h"

#include <bit>

namespace kvcached {

PageTable::PageTable(std::size_t pages)
    : entries_(pages),
      zero_bits_((pages + 63) / 64, ~std::uint64_t{0}),
      free_bits_((pages + 63) / 64, 0),
      zero_(pages) {
  if (pages % 64 != 0 && !zero_bits_.empty()) {
    zero_bits_.back() = (std::uint64_t{1} << (pages % 64)) - 1;  // no bits past the end
  }
}

void PageTable::SetBit(std::vector<std::uint64_t>& bits, std::size_t i, bool on) {
  std::uint64_t mask = std::uint64_t{1} << (i % 64);
  if (on) {
    bits[i / 64] |= mask;
  } else {
    bits[i / 64] &= ~mask;
  }
}

PageTable::RangeClass PageTable::Classify(std::size_t first, std::size_t end) const {
  RangeClass c;
  for (std::size_t i = first; i < end; ++i) {
    c.any_busy |= entries_[i].busy;
    c.any_zero |= entries_[i].state == PageState::kZero;
  }
  return c;
}

std::size_t PageTable::CommitAcquire(std::size_t first, std::size_t end) {
  std::size_t became_in_use = 0;
  for (std::size_t i = first; i < end; ++i) {
    PageEntry& e = entries_[i];
    if (e.refs++ == 0) {
      e.state = PageState::kInUse;
      SetBit(free_bits_, i, false);
      --mapped_free_;
      ++in_use_;
      ++became_in_use;
    }
  }
  return became_in_use;
}

std::size_t PageTable::FirstUnacquired(std::size_t first, std::size_t end) const {
  for (std::size_t i = first; i < end; ++i) {
    if (entries_[i].refs == 0) return i;
  }
  return end;
}

std::size_t PageTable::CommitRelease(std::size_t first, std::size_t end, std::int64_t now_ns) {
  std::size_t became_free = 0;
  for (std::size_t i = first; i < end; ++i) {
    PageEntry& e = entries_[i];
    if (--e.refs == 0) {
      e.state = PageState::kMappedFree;
      e.free_since_ns = now_ns;
      SetBit(free_bits_, i, true);
      --in_use_;
      ++mapped_free_;
      ++became_free;
    }
  }
  return became_free;
}

void PageTable::MarkMappedFree(std::size_t i, std::int64_t now_ns) {
  PageEntry& e = entries_[i];
  e.state = PageState::kMappedFree;
  e.free_since_ns = now_ns;
  SetBit(zero_bits_, i, false);
  SetBit(free_bits_, i, true);
  --zero_;
  ++mapped_free_;
}

void PageTable::MarkZero(std::size_t i) {
  entries_[i].state = PageState::kZero;
  SetBit(free_bits_, i, false);
  SetBit(zero_bits_, i, true);
  --mapped_free_;
  ++zero_;
}

void PageTable::SetBusy(std::size_t i, bool busy) {
  if (entries_[i].busy == busy) return;
  entries_[i].busy = busy;
  if (busy) {
    ++busy_;
  } else {
    --busy_;
  }
}

void PageTable::Pin(std::size_t first, std::size_t end) {
  for (std::size_t i = first; i < end; ++i) ++entries_[i].pins;
}

void PageTable::Unpin(std::size_t first, std::size_t end) {
  for (std::size_t i = first; i < end; ++i) --entries_[i].pins;
}

void PageTable::LowestZero(std::size_t n, std::vector<std::size_t>& out) const {
  for (std::size_t w = 0; w < zero_bits_.size() && n > 0; ++w) {
    for (std::uint64_t bits = zero_bits_[w]; bits != 0 && n > 0; bits &= bits - 1) {
      std::size_t i = w * 64 + static_cast<std::size_t>(std::countr_zero(bits));
      if (entries_[i].busy) continue;
      out.push_back(i);
      --n;
    }
  }
}

void PageTable::TrimCandidates(std::int64_t now_ns, std::int64_t delay_ns, std::size_t keep,
                               std::vector<std::size_t>& out) const {
  std::size_t seen = 0;
  for (std::size_t w = 0; w < free_bits_.size(); ++w) {
    for (std::uint64_t bits = free_bits_[w]; bits != 0; bits &= bits - 1) {
      std::size_t i = w * 64 + static_cast<std::size_t>(std::countr_zero(bits));
      if (seen++ < keep) continue;
      if (Takeable(i) && now_ns - entries_[i].free_since_ns >= delay_ns) out.push_back(i);
    }
  }
}

void PageTable::Reclaimable(std::size_t n, std::vector<std::size_t>& out) const {
  for (std::size_t w = free_bits_.size(); w-- > 0 && n > 0;) {
    for (std::uint64_t bits = free_bits_[w]; bits != 0 && n > 0;) {
      int top = 63 - std::countl_zero(bits);
      bits &= ~(std::uint64_t{1} << top);
      std::size_t i = w * 64 + static_cast<std::size_t>(top);
      if (!Takeable(i)) continue;
      out.push_back(i);
      --n;
    }
  }
}

}  // namespace kvcached
