#include "core/region/page_swapper.h"

namespace kvcached {
namespace {

// End of the run of consecutive page numbers that starts at pages[i] (pages ascending).
std::size_t RunEnd(std::span<const std::size_t> pages, std::size_t i) {
  std::size_t j = i + 1;
  while (j < pages.size() && pages[j] == pages[j - 1] + 1) ++j;
  return j;
}

}  // namespace

PageSwapper::PageSwapper(const driver::Driver& driver, CUdevice device, CUdeviceptr base,
                         std::size_t page_size,
                         std::vector<CUmemGenericAllocationHandle> zero_handles,
                         std::vector<PageBacking>& pages)
    : driver_(driver),
      device_(device),
      base_(base),
      page_size_(page_size),
      zero_(std::move(zero_handles)),
      pages_(pages),
      alias_of_(pages.size(), kNone),
      aliases_(pages.size()),
      hole_(pages.size(), 0) {}

void PageSwapper::SetHole(std::size_t page, bool hole) {
  if ((hole_[page] != 0) == hole) return;
  hole_[page] = hole ? 1 : 0;
  if (hole) {
    holes_.fetch_add(1, std::memory_order_relaxed);
  } else {
    holes_.fetch_sub(1, std::memory_order_relaxed);
  }
}

bool PageSwapper::IsHole(std::size_t page) const {
  std::lock_guard<std::mutex> lock(mu_);
  return hole_[page] != 0;
}

Status PageSwapper::MapAliases(std::size_t first, std::size_t end, Made& made,
                               std::vector<std::size_t>& failed) {
  Status first_error;
  auto keep = [&first_error](const Status& st) {
    if (!st.ok() && first_error.ok()) first_error = st;
  };
  std::size_t run_start = first;  // aliases made over [run_start, p) await one set-access
  auto grant = [&](std::size_t stop) {
    if (run_start == stop) return;
    Status st =
        driver::SetAccess(driver_, device_, Addr(run_start), (stop - run_start) * page_size_);
    if (!st.ok()) {  // mapped without access: a stray access would fault, so they are holes
      for (std::size_t q = run_start; q < stop; ++q) failed.push_back(q);
      keep(st);
    }
  };
  std::size_t p = first;
  while (p < end) {
    std::size_t level = zero_.size() - 1;
    while (level > 0 &&
           (p % (std::size_t{1} << level) != 0 || p + (std::size_t{1} << level) > end)) {
      --level;
    }
    const std::size_t n = std::size_t{1} << level;
    auto m = driver::Mapping::Map(driver_, Addr(p), n * page_size_, zero_[level]);
    if (!m.ok()) {
      grant(p);
      for (std::size_t q = p; q < p + n; ++q) failed.push_back(q);
      keep(m.status());
      p += n;
      run_start = p;
      continue;
    }
    made.emplace_back(p, std::move(m).value());
    p += n;
  }
  grant(end);
  return first_error;
}

void PageSwapper::Register(Made& made, const std::vector<std::size_t>& failed) {
  for (auto& [first, mapping] : made) {
    const std::size_t n = mapping.size() / page_size_;
    for (std::size_t q = first; q < first + n; ++q) {
      alias_of_[q] = first;
      SetHole(q, false);
    }
    aliases_[first] = std::move(mapping);
  }
  for (std::size_t q : failed) SetHole(q, true);
}

Status PageSwapper::AliasSpan(std::size_t first, std::size_t end) {
  Made made;
  std::vector<std::size_t> failed;
  Status st = MapAliases(first, end, made, failed);
  Register(made, failed);
  return st;
}

Status PageSwapper::Unalias(std::size_t first, std::size_t end) {
  for (std::size_t p = first; p < end; ++p) {
    const std::size_t a = alias_of_[p];
    if (a == kNone) continue;
    const std::size_t n = aliases_[a].size() / page_size_;
    KVC_RETURN_IF_ERROR(aliases_[a].Free());
    for (std::size_t q = a; q < a + n; ++q) alias_of_[q] = kNone;
    // The rest of the chunk belongs to other pages: they must not stay unmapped. (A failure
    // there leaves holes, which the pool repairs; it is not this caller's failure.)
    if (a < first) (void)AliasSpan(a, first);
    if (a + n > end) (void)AliasSpan(end, a + n);
    p = a + n - 1;
  }
  return Status::Ok();
}

void PageSwapper::AliasBare(std::size_t first, std::size_t end) {
  std::size_t p = first;
  while (p < end) {
    if (alias_of_[p] != kNone) {
      ++p;
      continue;
    }
    if (pages_[p].mapping) {  // a real mapping that could not be removed
      SetHole(p, true);
      ++p;
      continue;
    }
    std::size_t q = p;
    while (q < end && alias_of_[q] == kNone && !pages_[q].mapping) ++q;
    (void)AliasSpan(p, q);
    p = q;
  }
}

Status PageSwapper::AliasAll() {
  std::lock_guard<std::mutex> lock(mu_);
  return AliasSpan(0, pages_.size());
}

PageSwapper::Outcome PageSwapper::SwapIn(std::span<const std::size_t> pages,
                                         std::vector<driver::PhysicalHandle>& handles,
                                         std::vector<driver::PhysicalHandle>& leftovers) {
  Outcome out;
  std::size_t i = 0;
  while (i < pages.size()) {
    const std::size_t j = RunEnd(pages, i);
    const std::size_t first = pages[i];
    const std::size_t end = pages[j - 1] + 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      out.status = Unalias(first, end);
      if (!out.status.ok()) {
        AliasBare(first, end);
        return out;
      }
    }
    std::size_t mapped = 0;  // [first, first + mapped) now map real pages
    Status& st = out.status;
    for (; mapped < end - first; ++mapped) {
      PageBacking& b = pages_[first + mapped];
      st = b.mapping.Free();  // a stale mapping left on a hole
      if (!st.ok()) break;
      if (b.handle) leftovers.push_back(std::move(b.handle));
      auto m = driver::Mapping::Map(driver_, Addr(first + mapped), page_size_,
                                    handles[i + mapped].get());
      if (!m.ok()) {
        st = m.status();
        break;
      }
      b.mapping = std::move(m).value();
    }
    if (st.ok()) st = driver::SetAccess(driver_, device_, Addr(first), (end - first) * page_size_);
    if (!st.ok()) {
      // Roll back: the run's pages go back to the zero alias, their handles to the caller.
      for (std::size_t k = 0; k < mapped; ++k) {
        PageBacking& b = pages_[first + k];
        if (!b.mapping.Free().ok()) b.handle = std::move(handles[i + k]);  // kept until repaired
      }
      std::lock_guard<std::mutex> lock(mu_);
      AliasBare(first, end);
      return out;
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (std::size_t k = 0; k < end - first; ++k) {
      pages_[first + k].handle = std::move(handles[i + k]);
      SetHole(first + k, false);
    }
    out.done = i = j;
  }
  return out;
}

PageSwapper::Outcome PageSwapper::SwapOut(std::span<const std::size_t> pages,
                                          std::vector<driver::PhysicalHandle>& out_handles) {
  Outcome out;
  std::size_t i = 0;
  while (i < pages.size()) {
    const std::size_t j = RunEnd(pages, i);
    std::size_t k = i;
    Status unmap;
    for (; k < j; ++k) {
      PageBacking& b = pages_[pages[k]];
      unmap = b.mapping.Free();  // the real page
      if (!unmap.ok()) break;
      out_handles.push_back(std::move(b.handle));
    }
    out.done = k;
    if (k > i) {
      // These pages are ours (busy) and unmapped: their aliases are made outside the lock and
      // only entered in the table under it.
      Made made;
      std::vector<std::size_t> failed;
      Status alias = MapAliases(pages[i], pages[i] + (k - i), made, failed);
      std::lock_guard<std::mutex> lock(mu_);
      Register(made, failed);
      if (!alias.ok() && out.status.ok()) out.status = alias;
    }
    if (!unmap.ok()) {
      if (out.status.ok()) out.status = unmap;
      return out;
    }
    i = j;
  }
  return out;
}

Status PageSwapper::Repair(std::size_t page, std::vector<driver::PhysicalHandle>& leftovers) {
  PageBacking& b = pages_[page];
  KVC_RETURN_IF_ERROR(b.mapping.Free());
  if (b.handle) leftovers.push_back(std::move(b.handle));
  std::lock_guard<std::mutex> lock(mu_);
  KVC_RETURN_IF_ERROR(Unalias(page, page + 1));  // an alias left without access
  AliasBare(page, page + 1);
  if (hole_[page] != 0) return {Errc::kDriver, "could not re-alias a page to the zero page"};
  return Status::Ok();
}

Status PageSwapper::UnaliasAll() {
  std::lock_guard<std::mutex> lock(mu_);
  Status first;
  for (std::size_t a = 0; a < aliases_.size(); ++a) {
    if (!aliases_[a]) continue;
    const std::size_t n = aliases_[a].size() / page_size_;
    Status st = aliases_[a].FreeRetryingOnce();
    if (!st.ok()) {
      if (first.ok()) first = st;
      continue;
    }
    for (std::size_t q = a; q < a + n; ++q) alias_of_[q] = kNone;
  }
  return first;
}

}  // namespace kvcached
