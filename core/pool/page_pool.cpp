#include "core/pool/page_pool.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/common/clock.h"
#include "core/common/format_bytes.h"
#include "core/log/log.h"
#include "core/region/lazy_region.h"

namespace kvcached {

PagePool::PagePool(const driver::Driver& driver, Config config, int ordinal, CUdevice device,
                   CUcontext ctx, Budget& budget)
    : driver_(driver),
      config_(std::move(config)),
      ordinal_(ordinal),
      device_(device),
      ctx_(ctx),
      budget_(budget),
      page_size_(config_.page_size()),
      zero_bytes_(ZeroPage::BytesFor(page_size_, config_.zero_chunk_pages())) {}

PagePool::~PagePool() {
  worker_.Stop();
  ReleaseFreeList();
  if (zero_) {
    zero_.reset();  // cuMemRelease
    UnchargeZeroPage();
  }
}

void PagePool::ChargeZeroPage() {
  // The zero memory is fixed overhead of the process, like its CUDA context, not KV memory: it is
  // counted with the pass-through bytes (kvctl's OTHER), outside the budget. Inside, each
  // engine's few MiB would cost it a whole share unit (one page in every KV tensor) of the
  // budget's division, and an engine starting next to one that holds the whole budget would have
  // to wait for it.
  budget_.AddOther(static_cast<std::int64_t>(zero_bytes_));
  counters_.AddPhysical(zero_bytes_);
}

void PagePool::UnchargeZeroPage() {
  counters_.SubPhysical(zero_bytes_);
  budget_.AddOther(-static_cast<std::int64_t>(zero_bytes_));
}

Status PagePool::EnsureLazyReady() {
  if (lazy_ready_.load(std::memory_order_acquire)) return Status::Ok();
  std::lock_guard<std::mutex> lock(lazy_mu_);
  if (lazy_ready_.load(std::memory_order_relaxed)) return Status::Ok();
  ChargeZeroPage();
  auto zero = ZeroPage::Create(driver_, device_, ctx_, page_size_, config_.zero_chunk_pages());
  if (!zero.ok()) {
    UnchargeZeroPage();
    return zero.status();
  }
  zero_.emplace(std::move(zero).value());
  worker_.Start(
      "kvcached-pool", kPeriod, [this] { OnWorkerStart(); }, [this] { MaintenancePass(); });
  lazy_ready_.store(true, std::memory_order_release);
  return Status::Ok();
}

void PagePool::OnWorkerStart() {
  // The worker's driver calls run in the device's primary context, like the engine's.
  (void)driver_.Check(driver_.api().cuCtxSetCurrent(ctx_), "cuCtxSetCurrent");
}

void PagePool::Register(const std::shared_ptr<LazyRegion>& region) {
  {
    std::lock_guard<std::mutex> lock(regions_mu_);
    regions_.push_back(Registered{region.get(), region});
  }
  worker_.Wake();  // map ahead in the new region now
}

void PagePool::Unregister(const LazyRegion* region) {
  std::lock_guard<std::mutex> lock(regions_mu_);
  std::erase_if(regions_, [region](const Registered& r) { return r.raw == region; });
}

std::vector<std::shared_ptr<LazyRegion>> PagePool::Snapshot() {
  std::vector<std::shared_ptr<LazyRegion>> out;
  std::lock_guard<std::mutex> lock(regions_mu_);
  out.reserve(regions_.size());
  for (const Registered& r : regions_) {
    if (auto region = r.region.lock()) out.push_back(std::move(region));
  }
  return out;
}

Status PagePool::Charge(std::uint64_t bytes) {
  // Our own reserve (free list, mapped-ahead pages) is given up before anyone else is pressed.
  if (!budget_.TryCharge(bytes) && (MakeRoom(bytes) == 0 || !budget_.TryCharge(bytes))) {
    counters_.budget_refusals.fetch_add(1, std::memory_order_relaxed);
    budget_.RequestPressure(bytes);
    return {Errc::kNoMemory, RefusalMessage(bytes)};
  }
  counters_.AddPhysical(bytes);
  return Status::Ok();
}

void PagePool::Uncharge(std::uint64_t bytes) {
  budget_.Uncharge(bytes);
  counters_.SubPhysical(bytes);
}

std::string PagePool::RefusalMessage(std::uint64_t bytes) const {
  BudgetView v = budget_.View();
  return fmt::format(
      "budget refused {} on GPU {}: this process holds {} of limit {}; the GPU budget is {} "
      "({} held by all processes). Free KV blocks, or raise the limit (KVCACHED_BUDGET, "
      "KVCACHED_GPU_UTILIZATION or kvctl limit)",
      FormatBytes(bytes), ordinal_, FormatBytes(v.in_use + v.reserved), FormatBytes(v.limit),
      FormatBytes(v.budget), FormatBytes(v.all_charged));
}

Result<driver::PhysicalHandle> PagePool::CreateHandle() {
  if (!budget_.TryCharge(page_size_)) {
    return Status(Errc::kNoMemory, RefusalMessage(page_size_));
  }
  return CreateCharged();
}

Result<driver::PhysicalHandle> PagePool::CreateCharged() {
  counters_.AddPhysical(page_size_);
  auto handle = driver::PhysicalHandle::Create(driver_, device_, page_size_);
  if (!handle.ok()) Uncharge(page_size_);
  return handle;
}

void PagePool::ReleaseHandle(driver::PhysicalHandle handle) {
  std::uint64_t bytes = handle.size();
  if (!handle.FreeRetryingOnce().ok()) {
    handle.Abandon();  // the driver still holds it: so does the budget
    return;
  }
  Uncharge(bytes);
}

std::size_t PagePool::TakeFree(std::size_t n, std::vector<driver::PhysicalHandle>& out) {
  std::lock_guard<std::mutex> lock(free_mu_);
  std::size_t got = 0;
  for (; got < n && !free_.empty(); ++got) {
    out.push_back(std::move(free_.back()));
    free_.pop_back();
  }
  return got;
}

Status PagePool::TakeHandles(std::size_t n, std::vector<driver::PhysicalHandle>& out, Mode mode) {
  const std::size_t want = out.size() + n;
  TakeFree(n, out);
  if (mode == Mode::kBackground) {
    // Map-ahead is speculative: it takes what it can, page by page, and never presses anyone.
    while (out.size() < want) {
      auto handle = CreateHandle();
      if (!handle.ok()) {
        return handle.status().code() == Errc::kNoMemory ? Status::Ok() : handle.status();
      }
      out.push_back(std::move(handle).value());
    }
    return Status::Ok();
  }
  // Foreground: the budget is asked once for everything, so that a refusal costs no driver call
  // (an engine repeats a refused request every step while it waits for memory; measured on the
  // H100, page-by-page charging plus stealing cost ~1.2 ms per refused step). Pages mapped ahead
  // in this process's other regions are taken (stolen) only when they complete the request.
  std::size_t need = want - out.size();
  std::size_t steal = 0;
  if (need > 0 && !budget_.TryCharge(need * page_size_)) {
    steal = StealablePages(need);
    const std::size_t create = need - steal;
    if (steal == 0 || (create > 0 && !budget_.TryCharge(create * page_size_))) {
      return Refuse(need);
    }
    need = create;
  }
  // `need` pages are charged: create them (a driver failure uncharges what was not created).
  Status gpu_full;
  for (std::size_t i = 0; i < need; ++i) {
    auto handle = CreateCharged();
    if (!handle.ok()) {
      budget_.Uncharge((need - i - 1) * page_size_);
      if (handle.status().code() != Errc::kNoMemory) return handle.status();
      gpu_full = handle.status();  // the GPU itself is full: our mapped-ahead pages may do
      steal += need - i;
      break;
    }
    out.push_back(std::move(handle).value());
  }
  if (steal == 0) return Served();
  if (!gpu_full.ok() && StealablePages(steal) < steal) return gpu_full;
  if (Steal(steal, out) >= steal) return Served();
  return gpu_full.ok() ? Refuse(want - out.size()) : gpu_full;
}

Status PagePool::Served() {
  budget_.NoteServed();  // the engine got the KV pages it asked for: it is not refused now
  return Status::Ok();
}

Status PagePool::Refuse(std::size_t pages) {
  const std::uint64_t bytes = pages * page_size_;
  counters_.budget_refusals.fetch_add(1, std::memory_order_relaxed);
  // The engine asked for KV pages: this (and only this, not the zero memory or a set-up
  // reservation) counts toward its starvation episode.
  budget_.NoteRefused(bytes);
  budget_.RequestPressure(bytes);
  return {Errc::kNoMemory, RefusalMessage(bytes)};
}

bool PagePool::CanBack(std::size_t n) {
  const std::size_t free = free_pages();
  if (free >= n) return true;
  const auto room = static_cast<std::size_t>(budget_.Headroom() / page_size_);
  if (free + room >= n) return true;
  return StealablePages(n - free - room) >= n - free - room;
}

std::uint64_t PagePool::Headroom() const {
  const BudgetView v = budget_.View();
  const std::uint64_t own = v.in_use + v.reserved;
  const std::uint64_t by_limit = v.limit > own ? v.limit - own : 0;
  const std::uint64_t by_budget = v.budget > v.all_charged ? v.budget - v.all_charged : 0;
  // The reserved column also holds the pages an acquire in flight is mapping: a brief overcount.
  return std::min(by_limit, by_budget) + v.reserved;
}

void PagePool::GiveHandles(std::vector<driver::PhysicalHandle>& handles) {
  std::vector<driver::PhysicalHandle> release;
  {
    bool keep = !holding();
    std::lock_guard<std::mutex> lock(free_mu_);
    for (auto& h : handles) {
      if (!h) continue;
      if (keep && h.size() == page_size_ && free_.size() < config_.max_reserved_pages) {
        free_.push_back(std::move(h));
      } else {
        release.push_back(std::move(h));
      }
    }
  }
  handles.clear();
  for (auto& h : release) ReleaseHandle(std::move(h));
}

void PagePool::ReleaseFreeList() {
  std::vector<driver::PhysicalHandle> release;
  {
    std::lock_guard<std::mutex> lock(free_mu_);
    release.swap(free_);
  }
  for (auto& h : release) ReleaseHandle(std::move(h));
}

std::size_t PagePool::StealablePages(std::size_t n) {
  std::size_t pages = 0;
  for (const auto& region : Snapshot()) {
    if (pages >= n) break;
    pages += region->StealablePages(n - pages);
  }
  return pages;
}

std::size_t PagePool::Steal(std::size_t n, std::vector<driver::PhysicalHandle>& out) {
  std::size_t got = 0;
  for (const auto& region : Snapshot()) {
    if (got >= n) break;
    got += region->StealFree(n - got, out);
  }
  return got;
}

std::uint64_t PagePool::MakeRoom(std::uint64_t bytes) {
  std::uint64_t freed = 0;
  std::vector<driver::PhysicalHandle> release;
  {
    std::lock_guard<std::mutex> lock(free_mu_);
    while (freed < bytes && !free_.empty()) {
      freed += free_.back().size();
      release.push_back(std::move(free_.back()));
      free_.pop_back();
    }
  }
  if (freed < bytes) {
    auto pages = static_cast<std::size_t>((bytes - freed + page_size_ - 1) / page_size_);
    std::size_t before = release.size();
    Steal(pages, release);
    freed += (release.size() - before) * page_size_;
  }
  for (auto& h : release) ReleaseHandle(std::move(h));
  return freed;
}

void PagePool::NoteMiss() {
  hold_until_ns_.store(0, std::memory_order_relaxed);
  worker_.Wake();
}

bool PagePool::holding() const {
  return NowNs() < hold_until_ns_.load(std::memory_order_relaxed);
}

Status PagePool::GiveBackAll() {
  KVC_LOG_DEBUG("GPU {}: giving back every page not in use", ordinal_);
  hold_until_ns_.store(NowNs() + kHoldNs, std::memory_order_relaxed);
  Status first;
  for (const auto& region : Snapshot()) {
    Status st = region->GiveBackFree();
    if (!st.ok() && first.ok()) first = st;
  }
  ReleaseFreeList();
  return first;
}

Status PagePool::TrimNow() {
  // The engine asked (idle): its regions rest until their next acquire, so map-ahead does not
  // refill them once the hold ends; the reserve of unmapped pages refills to its minimum.
  for (const auto& region : Snapshot()) region->Rest();
  return GiveBackAll();
}

void PagePool::StopWorker() {
  worker_.Stop();
}

std::size_t PagePool::free_pages() const {
  std::lock_guard<std::mutex> lock(free_mu_);
  return free_.size();
}

std::uint64_t PagePool::zero_page_bytes() const {
  return lazy_ready_.load(std::memory_order_acquire) ? zero_bytes_ : 0;
}

}  // namespace kvcached
