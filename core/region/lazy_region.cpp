#include "core/region/lazy_region.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/common/clock.h"
#include "core/driver/context.h"
#include "core/pool/page_pool.h"

namespace kvcached {

Result<std::shared_ptr<LazyRegion>> LazyRegion::Create(PagePool& pool, std::uint64_t size) {
  if (size == 0) return Status(Errc::kInvalid, "cannot create a region of 0 bytes");
  std::uint64_t rounded = RoundUpToPage(size, pool.page_size());
  if (rounded == 0) {
    return Status(Errc::kInvalid, fmt::format("region size {} is too large", size));
  }
  KVC_RETURN_IF_ERROR(pool.EnsureLazyReady());
  auto scope = driver::ScopedContext::Enter(pool.driver(), pool.context());
  if (!scope.ok()) return scope.status();
  // Zero aliases are chunks aligned to their size within the region: the VA is aligned to the
  // largest chunk (a power of two whenever it spans more than one page).
  auto va = driver::VaReservation::Reserve(pool.driver(), rounded,
                                           pool.page_size() * pool.config().zero_chunk_pages());
  if (!va.ok()) return va.status();
  auto region = std::make_shared<LazyRegion>(Key{}, pool, std::move(va).value());
  // On failure the region's destructor unmaps what was mapped and frees the VA.
  KVC_RETURN_IF_ERROR(region->swapper_.AliasAll());
  pool.Register(region);
  return region;
}

LazyRegion::LazyRegion(Key /*key*/, PagePool& pool, driver::VaReservation va)
    : Region(va.ptr(), va.size(), pool.page_size(), pool.ordinal(), RegionKind::kLazy),
      pool_(pool),
      va_(std::move(va)),
      backing_(pages()),
      swapper_(pool.driver(), pool.cu_device(), base(), pool.page_size(), pool.zero_handles(),
               backing_),
      table_(pages()) {}

LazyRegion::~LazyRegion() {
  (void)Destroy();
}

void LazyRegion::EndOp(std::unique_lock<std::mutex>& lock) {
  --ops_in_flight_;
  lock.unlock();
  cv_.notify_all();
}

Status LazyRegion::Acquire(std::uint64_t offset, std::uint64_t length, SwappedPages* swapped) {
  std::size_t first = 0;
  std::size_t end = 0;
  KVC_RETURN_IF_ERROR(PageSpan(offset, length, first, end));
  std::unique_lock<std::mutex> lock(mu_);
  acquired_once_ = true;
  resting_ = false;
  for (;;) {
    if (dead_) return Gone();
    PageTable::RangeClass c = table_.Classify(first, end);
    if (c.any_busy) {  // another thread is swapping one of our pages: wait for it
      cv_.wait(lock);
      continue;
    }
    if (c.any_zero) return AcquireMiss(lock, first, end, swapped);
    // The warm path: every page is mapped, only the table changes. No driver call.
    std::size_t became_in_use = table_.CommitAcquire(first, end);
    const std::int64_t now = NowNs();
    demand_.Note(became_in_use, now);
    bool low = table_.mapped_free_count() < AheadTargetLocked(now) && table_.zero_count() > 0;
    lock.unlock();
    if (became_in_use > 0) pool_.MoveToInUse(became_in_use * page_size());
    if (low) pool_.Wake();  // map-ahead refills what was just consumed
    return Status::Ok();
  }
}

Status LazyRegion::AcquireMiss(std::unique_lock<std::mutex>& lock, std::size_t first,
                               std::size_t end, SwappedPages* swapped) {
  std::vector<std::size_t> misses;
  for (std::size_t i = first; i < end; ++i) {
    if (table_.at(i).state == PageState::kZero) misses.push_back(i);
  }
  for (std::size_t m : misses) table_.SetBusy(m, true);
  table_.Pin(first, end);  // the range's mapped pages must stay mapped until we commit
  ++ops_in_flight_;
  const bool first_swap = !synced_once_;
  synced_once_ = true;
  lock.unlock();

  pool_.NoteMiss();
  pool_.BeginForeground();
  struct EndForeground {
    explicit EndForeground(PagePool& p) : pool(p) {}
    EndForeground(const EndForeground&) = delete;
    EndForeground& operator=(const EndForeground&) = delete;
    EndForeground(EndForeground&&) = delete;
    EndForeground& operator=(EndForeground&&) = delete;
    ~EndForeground() { pool.EndForeground(); }
    PagePool& pool;
  } end_foreground{pool_};
  std::vector<driver::PhysicalHandle> handles;
  std::vector<driver::PhysicalHandle> spare;  // to give back to the pool
  PageSwapper::Outcome in;
  PageSwapper::Outcome undo;
  Status st = pool_.TakeHandles(misses.size(), handles, PagePool::Mode::kForeground);
  if (st.ok()) {
    auto scope = driver::ScopedContext::Enter(pool_.driver(), pool_.context());
    st = scope.status();
    // The engine's zero fill of the new allocation may still be running through the aliases
    // this swap replaces (acquired_once_): once per region, let the queued work finish first.
    if (st.ok() && first_swap) {
      st = pool_.driver().Check(pool_.driver().api().cuCtxSynchronize(), "cuCtxSynchronize");
    }
    if (st.ok()) {
      in = swapper_.SwapIn(misses, handles, spare);
      st = in.status;
      if (!st.ok() && in.done > 0) {  // all or nothing: put back the runs that succeeded
        undo = swapper_.SwapOut(std::span(misses).first(in.done), spare);
      }
    }
  }
  for (auto& h : handles) spare.push_back(std::move(h));

  lock.lock();
  std::int64_t now = NowNs();
  for (std::size_t k = 0; k < misses.size(); ++k) {
    // Backed now: all pages on success; on failure those whose undo failed (still mapped).
    bool backed = st.ok() || (k >= undo.done && k < in.done);
    if (backed) table_.MarkMappedFree(misses[k], now);
    table_.SetBusy(misses[k], false);
  }
  table_.Unpin(first, end);
  std::size_t became_in_use = st.ok() ? table_.CommitAcquire(first, end) : 0;
  // A miss is demand the reserve did not cover: the pool maps the next ones ahead (EndForeground
  // wakes it).
  demand_.Note(became_in_use, now);
  EndOp(lock);

  pool_.GiveHandles(spare);
  PoolCounters& counters = pool_.counters();
  counters.maps.fetch_add(in.done, std::memory_order_relaxed);
  counters.sync_maps.fetch_add(in.done, std::memory_order_relaxed);
  counters.unmaps.fetch_add(undo.done, std::memory_order_relaxed);
  if (!st.ok()) return st;
  if (swapped != nullptr) swapped->insert(swapped->end(), misses.begin(), misses.end());
  if (became_in_use > 0) pool_.MoveToInUse(became_in_use * page_size());
  return st;
}

Status LazyRegion::Release(std::uint64_t offset, std::uint64_t length) {
  std::size_t first = 0;
  std::size_t end = 0;
  KVC_RETURN_IF_ERROR(PageSpan(offset, length, first, end));
  std::unique_lock<std::mutex> lock(mu_);
  if (dead_) return Gone();
  std::size_t bad = table_.FirstUnacquired(first, end);
  if (bad != end) {
    return {Errc::kState,
            fmt::format("release of [0x{:x}, +{}): the page at 0x{:x} holds no acquired "
                        "range (release without a matching acquire)",
                        base() + offset, length, base() + bad * page_size())};
  }
  std::size_t became_free = table_.CommitRelease(first, end, NowNs());
  lock.unlock();
  if (became_free > 0) {
    pool_.MoveToReserved(became_free * page_size());
    // With a trim delay shorter than the worker's period, the worker must look now.
    if (pool_.config().trim_delay_ms < PagePool::kPeriod.count()) pool_.Wake();
  }
  return Status::Ok();
}

void LazyRegion::Undo(std::uint64_t offset, std::uint64_t length, const SwappedPages& swapped) {
  (void)Release(offset, length);
  if (swapped.empty()) return;
  (void)SwapOutChosen(
      [&](std::vector<std::size_t>& out) {
        for (std::size_t p : swapped) {
          const PageEntry& e = table_.at(p);
          if (e.state == PageState::kMappedFree && !e.busy && e.pins == 0) out.push_back(p);
        }
        std::sort(out.begin(), out.end());
        out.erase(std::unique(out.begin(), out.end()), out.end());
      },
      nullptr);
}

template <class Select>
Status LazyRegion::SwapOutChosen(Select select, std::vector<driver::PhysicalHandle>* out,
                                 std::size_t* count) {
  std::vector<std::size_t> pages;
  std::unique_lock<std::mutex> lock(mu_);
  if (dead_) return Status::Ok();
  select(pages);
  if (pages.empty()) return Status::Ok();
  for (std::size_t p : pages) table_.SetBusy(p, true);
  ++ops_in_flight_;
  lock.unlock();

  std::vector<driver::PhysicalHandle> handles;
  PageSwapper::Outcome o;
  auto scope = driver::ScopedContext::Enter(pool_.driver(), pool_.context());
  o.status = scope.status();
  if (o.status.ok()) o = swapper_.SwapOut(pages, handles);

  lock.lock();
  for (std::size_t k = 0; k < o.done; ++k) table_.MarkZero(pages[k]);
  for (std::size_t p : pages) table_.SetBusy(p, false);
  EndOp(lock);

  pool_.counters().unmaps.fetch_add(o.done, std::memory_order_relaxed);
  if (count != nullptr) *count = o.done;
  if (out != nullptr) {
    for (auto& h : handles) {
      if (h) out->push_back(std::move(h));
    }
  } else {
    pool_.GiveHandles(handles);
  }
  return o.status;
}

Status LazyRegion::MapAhead(std::size_t target) {
  std::vector<std::size_t> pages;
  std::unique_lock<std::mutex> lock(mu_);
  if (dead_ || !acquired_once_ || resting_ || table_.mapped_free_count() >= target) {
    return Status::Ok();
  }
  table_.LowestZero(target - table_.mapped_free_count(), pages);
  if (pages.empty()) return Status::Ok();
  for (std::size_t p : pages) table_.SetBusy(p, true);
  ++ops_in_flight_;
  lock.unlock();

  std::vector<driver::PhysicalHandle> handles;
  std::vector<driver::PhysicalHandle> spare;
  PageSwapper::Outcome in;
  in.status = pool_.TakeHandles(pages.size(), handles, PagePool::Mode::kBackground);
  std::size_t n = std::min(handles.size(), pages.size());
  if (n > 0) {
    auto scope = driver::ScopedContext::Enter(pool_.driver(), pool_.context());
    in.status = scope.status();
    if (in.status.ok()) in = swapper_.SwapIn(std::span(pages).first(n), handles, spare);
  }
  for (auto& h : handles) spare.push_back(std::move(h));

  lock.lock();
  std::int64_t now = NowNs();
  for (std::size_t k = 0; k < in.done; ++k) table_.MarkMappedFree(pages[k], now);
  for (std::size_t p : pages) table_.SetBusy(p, false);
  EndOp(lock);

  pool_.counters().maps.fetch_add(in.done, std::memory_order_relaxed);
  pool_.GiveHandles(spare);
  return in.status;
}

Status LazyRegion::TrimExpired(std::int64_t now_ns, std::int64_t delay_ns, std::size_t keep) {
  return SwapOutChosen(
      [&](std::vector<std::size_t>& out) { table_.TrimCandidates(now_ns, delay_ns, keep, out); },
      nullptr);
}

void LazyRegion::Rest() {
  std::lock_guard<std::mutex> lock(mu_);
  resting_ = true;
  demand_.Reset();
}

std::size_t LazyRegion::AheadTarget(std::int64_t now_ns) const {
  std::lock_guard<std::mutex> lock(mu_);
  return AheadTargetLocked(now_ns);
}

std::size_t LazyRegion::AheadTargetLocked(std::int64_t now_ns) const {
  const Config& c = pool_.config();
  return demand_.Target(now_ns, c.map_ahead_pages, c.map_ahead_burst_pages);
}

Status LazyRegion::GiveBackFree() {
  return SwapOutChosen(
      [&](std::vector<std::size_t>& out) {
        table_.Reclaimable(table_.size(), out);
        std::sort(out.begin(), out.end());  // ascending: contiguous pages share a set-access
      },
      nullptr);
}

std::size_t LazyRegion::StealFree(std::size_t n, std::vector<driver::PhysicalHandle>& out) {
  std::size_t count = 0;
  (void)SwapOutChosen(
      [&](std::vector<std::size_t>& pages) {
        table_.Reclaimable(n, pages);
        std::sort(pages.begin(), pages.end());
      },
      &out, &count);
  return count;
}

void LazyRegion::RepairHoles() {
  if (holes() == 0) return;
  std::vector<std::size_t> pages;
  std::unique_lock<std::mutex> lock(mu_);
  if (dead_) return;
  for (std::size_t p = 0; p < table_.size(); ++p) {
    // busy first: a page's backing is only ours to read once no other thread owns it.
    if (!table_.at(p).busy && table_.at(p).state == PageState::kZero && swapper_.IsHole(p)) {
      pages.push_back(p);
    }
  }
  for (std::size_t p : pages) table_.SetBusy(p, true);
  ++ops_in_flight_;
  lock.unlock();

  std::vector<driver::PhysicalHandle> spare;
  auto scope = driver::ScopedContext::Enter(pool_.driver(), pool_.context());
  if (scope.ok()) {
    for (std::size_t p : pages) (void)swapper_.Repair(p, spare);
  }

  lock.lock();
  for (std::size_t p : pages) table_.SetBusy(p, false);
  EndOp(lock);
  pool_.GiveHandles(spare);
}

Result<PageState> LazyRegion::StateAt(std::uint64_t offset) const {
  if (offset >= size()) {
    return Status(Errc::kInvalid, fmt::format("0x{:x} is outside region 0x{:x} of {} bytes",
                                              base() + offset, base(), size()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (dead_) return Gone();
  return table_.at(static_cast<std::size_t>(offset / page_size())).state;
}

std::size_t LazyRegion::PagesToBack(std::size_t first_page, std::size_t end_page) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (dead_) return 0;
  std::size_t n = 0;
  for (std::size_t p = first_page; p < std::min(end_page, table_.size()); ++p) {
    n += table_.at(p).state == PageState::kZero ? 1 : 0;
  }
  return n;
}

RegionInfo LazyRegion::Info() const {
  std::lock_guard<std::mutex> lock(mu_);
  RegionInfo info;
  info.base = base();
  info.size = size();
  info.page_size = page_size();
  info.pages = pages();
  info.zero_pages = table_.zero_count();
  info.mapped_free_pages = table_.mapped_free_count();
  info.in_use_pages = table_.in_use_count();
  info.device = device();
  info.kind = RegionKind::kLazy;
  return info;
}

std::size_t LazyRegion::StealablePages(std::size_t limit) const {
  std::vector<std::size_t> pages;
  std::lock_guard<std::mutex> lock(mu_);
  table_.Reclaimable(limit, pages);
  return pages.size();
}

std::size_t LazyRegion::mapped_free_pages() const {
  std::lock_guard<std::mutex> lock(mu_);
  return table_.mapped_free_count();
}

Status LazyRegion::Destroy() {
  pool_.Unregister(this);
  std::unique_lock<std::mutex> lock(mu_);
  if (destroyed_) return Status::Ok();
  dead_ = true;
  cv_.notify_all();  // acquires waiting on busy pages see dead_ and leave
  cv_.wait(lock, [this] { return ops_in_flight_ == 0; });
  destroyed_ = true;
  // The engine freed the allocation: whatever it still held is no longer in use.
  if (table_.in_use_count() > 0) pool_.MoveToReserved(table_.in_use_count() * page_size());

  Status first;
  auto keep_first = [&first](const Status& st) {
    if (!st.ok() && first.ok()) first = st;
  };
  auto scope = driver::ScopedContext::Enter(pool_.driver(), pool_.context());
  std::vector<driver::PhysicalHandle> handles;
  for (PageBacking& b : backing_) {
    Status st = b.mapping.FreeRetryingOnce();
    keep_first(st);
    // A page still mapped keeps its handle (released with the mapping's owner, after it).
    if (st.ok() && b.handle) handles.push_back(std::move(b.handle));
  }
  keep_first(swapper_.UnaliasAll());
  keep_first(va_.FreeRetryingOnce());
  lock.unlock();
  pool_.GiveHandles(handles);
  return first;
}

}  // namespace kvcached
