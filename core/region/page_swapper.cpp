#include "core/region/page_swapper.h"

namespace kvcached {

void PageSwapper::SetHole(std::size_t page, bool hole) {
  if (pages_[page].hole == hole) return;
  pages_[page].hole = hole;
  if (hole) {
    holes_.fetch_add(1, std::memory_order_relaxed);
  } else {
    holes_.fetch_sub(1, std::memory_order_relaxed);
  }
}

Status PageSwapper::AliasAll() {
  for (std::size_t p = 0; p < pages_.size(); ++p) {
    auto m = driver::Mapping::Map(driver_, Addr(p), page_size_, zero_);
    if (!m.ok()) return m.status();
    pages_[p].mapping = std::move(m).value();
  }
  return driver::SetAccess(driver_, device_, base_, pages_.size() * page_size_);
}

void PageSwapper::AliasZero(std::size_t page) {
  auto m = driver::Mapping::Map(driver_, Addr(page), page_size_, zero_);
  if (!m.ok()) {
    SetHole(page, true);
    return;
  }
  pages_[page].mapping = std::move(m).value();
  SetHole(page, !driver::SetAccess(driver_, device_, Addr(page), page_size_).ok());
}

// Measured on the H100 (docs/driver-facts.md): cuMemUnmap costs ~21 us per call whatever the
// size, and one call may span several whole adjacent mappings. Unmapping a run at once makes a
// burst of N pages cost one unmap instead of N. The per-page path below stays as the fallback.
bool PageSwapper::UnmapRun(std::span<const std::size_t> run) {
  if (run.size() < 2) return false;
  for (std::size_t p : run) {
    if (!pages_[p].mapping || pages_[p].mapping.size() != page_size_) return false;
  }
  if (driver_.api().cuMemUnmap(Addr(run[0]), run.size() * page_size_) != CUDA_SUCCESS) {
    return false;
  }
  for (std::size_t p : run) pages_[p].mapping.Abandon();  // unmapped above
  return true;
}

Status PageSwapper::SwapInRun(std::span<const std::size_t> run, driver::PhysicalHandle* handles,
                              std::vector<driver::PhysicalHandle>& leftovers) {
  std::size_t mapped = 0;  // run[0, mapped) now map real pages
  Status st;
  (void)UnmapRun(run);  // best effort; the loop unmaps page by page what is still mapped
  for (; mapped < run.size(); ++mapped) {
    PageBacking& b = pages_[run[mapped]];
    st = b.mapping.Free();  // the zero alias (or whatever a hole still has)
    if (!st.ok()) break;
    if (b.handle) leftovers.push_back(std::move(b.handle));
    auto m = driver::Mapping::Map(driver_, Addr(run[mapped]), page_size_, handles[mapped].get());
    if (!m.ok()) {
      st = m.status();
      break;
    }
    b.mapping = std::move(m).value();
  }
  if (st.ok()) {
    st = driver::SetAccess(driver_, device_, Addr(run[0]), run.size() * page_size_);
  }
  if (st.ok()) {
    for (std::size_t k = 0; k < run.size(); ++k) {
      pages_[run[k]].handle = std::move(handles[k]);
      SetHole(run[k], false);
    }
    return st;
  }
  // Roll back: every page of the run goes back to the zero alias, its handle to the caller.
  for (std::size_t k = 0; k < mapped; ++k) {
    PageBacking& b = pages_[run[k]];
    if (!b.mapping.Free().ok()) {
      b.handle = std::move(handles[k]);  // still mapped: keep it alive until repaired
      SetHole(run[k], true);
      continue;
    }
    AliasZero(run[k]);
  }
  // Pages not reached keep their zero alias, unless the run unmap or this loop removed it.
  for (std::size_t k = mapped; k < run.size(); ++k) {
    if (!pages_[run[k]].mapping) AliasZero(run[k]);
  }
  return st;
}

PageSwapper::Outcome PageSwapper::SwapIn(std::span<const std::size_t> pages,
                                         std::vector<driver::PhysicalHandle>& handles,
                                         std::vector<driver::PhysicalHandle>& leftovers) {
  Outcome out;
  std::size_t i = 0;
  while (i < pages.size()) {
    std::size_t j = i + 1;
    while (j < pages.size() && pages[j] == pages[j - 1] + 1) ++j;
    out.status = SwapInRun(pages.subspan(i, j - i), &handles[i], leftovers);
    if (!out.status.ok()) break;
    out.done = i = j;
  }
  return out;
}

PageSwapper::Outcome PageSwapper::SwapOut(std::span<const std::size_t> pages,
                                          std::vector<driver::PhysicalHandle>& out_handles) {
  Outcome out;
  for (std::size_t i = 0; i < pages.size();) {  // one unmap per run of adjacent pages
    std::size_t j = i + 1;
    while (j < pages.size() && pages[j] == pages[j - 1] + 1) ++j;
    (void)UnmapRun(pages.subspan(i, j - i));
    i = j;
  }
  std::size_t run_start = 0;  // pages[run_start, i) were aliased and await one set-access
  auto flush = [&](std::size_t end) {
    if (run_start == end) return;
    std::size_t n = end - run_start;
    Status st = driver::SetAccess(driver_, device_, Addr(pages[run_start]), n * page_size_);
    if (!st.ok()) {
      for (std::size_t k = run_start; k < end; ++k) SetHole(pages[k], true);
      if (out.status.ok()) out.status = st;
    }
    run_start = end;
  };
  for (std::size_t i = 0; i < pages.size(); ++i) {
    if (i > run_start && pages[i] != pages[i - 1] + 1) flush(i);
    PageBacking& b = pages_[pages[i]];
    Status st = b.mapping.Free();  // the real page
    if (!st.ok()) {
      flush(i);
      if (out.status.ok()) out.status = st;
      return out;
    }
    out_handles.push_back(std::move(b.handle));
    out.done = i + 1;
    auto m = driver::Mapping::Map(driver_, Addr(pages[i]), page_size_, zero_);
    if (!m.ok()) {
      flush(i);
      run_start = i + 1;
      SetHole(pages[i], true);
      if (out.status.ok()) out.status = m.status();
      continue;
    }
    b.mapping = std::move(m).value();
  }
  flush(pages.size());
  return out;
}

Status PageSwapper::Repair(std::size_t page, std::vector<driver::PhysicalHandle>& leftovers) {
  PageBacking& b = pages_[page];
  KVC_RETURN_IF_ERROR(b.mapping.Free());
  if (b.handle) leftovers.push_back(std::move(b.handle));
  AliasZero(page);
  if (b.hole) return Status(Errc::kDriver, "could not re-alias a page to the zero page");
  return Status::Ok();
}

}  // namespace kvcached
