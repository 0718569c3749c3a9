#include "core/pool/page_pool.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/log/log.h"
#include "core/pool/format_bytes.h"
#include "core/region/clock.h"
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
      page_size_(config_.page_size()) {}

PagePool::~PagePool() {
  worker_.Stop();
  ReleaseFreeList();
  if (zero_) {
    std::uint64_t bytes = zero_->size();
    zero_.reset();  // cuMemRelease
    Uncharge(bytes);
  }
}

Status PagePool::EnsureLazyReady() {
  if (lazy_ready_.load(std::memory_order_acquire)) return Status::Ok();
  std::lock_guard<std::mutex> lock(lazy_mu_);
  if (lazy_ready_.load(std::memory_order_relaxed)) return Status::Ok();
  KVC_RETURN_IF_ERROR(Charge(page_size_));  // the zero page is physical memory too
  auto zero = ZeroPage::Create(driver_, device_, ctx_, page_size_);
  if (!zero.ok()) {
    Uncharge(page_size_);
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
    return Status(Errc::kNoMemory, RefusalMessage(bytes));
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
  counters_.AddPhysical(page_size_);
  auto handle = driver::PhysicalHandle::Create(driver_, device_, page_size_);
  if (!handle.ok()) Uncharge(page_size_);
  return handle;
}

void PagePool::ReleaseHandle(driver::PhysicalHandle handle) {
  std::uint64_t bytes = handle.size();
  if (!handle.Free().ok() && !handle.Free().ok()) {
    handle.Abandon();  // the driver still holds it: so does the budget
    return;
  }
  Uncharge(bytes);
}

Status PagePool::TakeHandles(std::size_t n, std::vector<driver::PhysicalHandle>& out, Mode mode) {
  const std::size_t want = out.size() + n;
  {
    std::lock_guard<std::mutex> lock(free_mu_);
    while (out.size() < want && !free_.empty()) {
      out.push_back(std::move(free_.back()));
      free_.pop_back();
    }
  }
  while (out.size() < want) {
    auto handle = CreateHandle();
    if (handle.ok()) {
      out.push_back(std::move(handle).value());
      continue;
    }
    Status st = handle.status();
    // Map-ahead is speculative: it takes what it can and never presses anyone.
    if (mode == Mode::kBackground) return st.code() == Errc::kNoMemory ? Status::Ok() : st;
    if (st.code() != Errc::kNoMemory) return st;
    // The budget or the GPU is full: pages mapped ahead in our other regions (or unused pages
    // of this one) come first. Stealing swaps pages out (driver calls), so it is done only when
    // it can complete the request: a refusal repeats every engine step while the engine waits
    // for memory, and must stay cheap (measured on the H100: ~1.2 ms per refused step when
    // every refusal stole pages that map-ahead then mapped again).
    if (CanSteal(want - out.size())) {
      Steal(want - out.size(), out);
      if (out.size() >= want) return Status::Ok();
    }
    if (st.driver_code() == 0) {  // the budget refused (not the driver)
      counters_.budget_refusals.fetch_add(1, std::memory_order_relaxed);
      budget_.RequestPressure((want - out.size()) * page_size_);
    }
    return st;
  }
  return Status::Ok();
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

bool PagePool::CanSteal(std::size_t n) {
  std::size_t pages = 0;
  for (const auto& region : Snapshot()) {
    pages += region->StealablePages(n - pages);
    if (pages >= n) return true;
  }
  return false;
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
    std::size_t pages = static_cast<std::size_t>((bytes - freed + page_size_ - 1) / page_size_);
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
  return lazy_ready_.load(std::memory_order_acquire) ? page_size_ : 0;
}

}  // namespace kvcached
