#include "core/runtime/runtime.h"

#include <fmt/format.h>
#include <sched.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <mutex>

#include "core/driver/driver.h"
#include "core/log/log.h"
#include "core/region/eager_region.h"
#include "core/region/lazy_region.h"
#include "core/runtime/device_state.h"
#include "core/runtime/region_registry.h"

namespace kvcached {

struct Runtime::Impl {
  Config config;
  std::unique_ptr<driver::Driver> driver;
  BudgetFactory budget_factory;

  std::mutex devices_mu;
  std::map<int, std::unique_ptr<DeviceState>> devices;
  std::string label;  // guarded by devices_mu; applied to devices created later

  RegionRegistry regions;

  // Pass-through accounting per device, kept lock-free because it runs on every cudaMalloc and
  // cudaFree the engine makes outside a region. Bytes noted before the device's state (and its
  // ledger slot) exists wait in `pending`; the state is never created for them, so that no
  // allocation of the engine pays for attaching to the ledger. Device() hands them over.
  struct Passthrough {
    std::atomic<std::int64_t> bytes{0};        // what kvcached_stats reports
    std::atomic<std::int64_t> pending{0};      // not yet given to the budget
    std::atomic<DeviceState*> state{nullptr};  // published by Device()
    std::atomic<bool> direct{false};           // pending handed over: add to the budget
  };
  static constexpr int kCountedDevices = 64;  // more GPUs than any machine has: not counted
  std::array<Passthrough, kCountedDevices> passthrough;

  void PublishDevice(int ordinal, DeviceState* state) {
    if (ordinal < 0 || ordinal >= kCountedDevices) return;
    Passthrough& p = passthrough[static_cast<std::size_t>(ordinal)];
    p.state.store(state, std::memory_order_seq_cst);
    const std::int64_t early = p.pending.exchange(0, std::memory_order_seq_cst);
    if (early != 0) state->budget->AddOther(early);
    p.direct.store(true, std::memory_order_release);
  }

  // The state of `ordinal`, created on its first use. States live as long as the runtime, so
  // the pointer stays valid after the lock is dropped.
  Result<DeviceState*> Device(int ordinal) {
    std::lock_guard<std::mutex> lock(devices_mu);
    auto it = devices.find(ordinal);
    if (it != devices.end()) return it->second.get();
    auto state = DeviceState::Create(*driver, config, ordinal, budget_factory, label);
    if (!state.ok()) return state.status();
    DeviceState* raw = state.value().get();
    devices.emplace(ordinal, std::move(state).value());
    PublishDevice(ordinal, raw);
    return raw;
  }

  // The state of `ordinal` if it was used already (never creates one).
  DeviceState* Existing(int ordinal) {
    std::lock_guard<std::mutex> lock(devices_mu);
    auto it = devices.find(ordinal);
    return it == devices.end() ? nullptr : it->second.get();
  }

  // A request spanning several ranges is refused up front when its devices' pools cannot back
  // all of it: otherwise the first ranges would be swapped in and undone again, costing driver
  // calls on every engine step that waits for memory.
  // found[i] is the region of ranges[i] (never null).
  Status CheckCanBack(std::span<const ByteRange> ranges,
                      std::span<const std::shared_ptr<Region>> found);

  static Status NotFound(std::uint64_t addr) {
    return {Errc::kNotFound, fmt::format("no kvcached region contains 0x{:x}", addr)};
  }
};

Status Runtime::Impl::CheckCanBack(std::span<const ByteRange> ranges,
                                   std::span<const std::shared_ptr<Region>> found) {
  struct Span {
    Region* region;
    std::size_t first;
    std::size_t end;
  };
  std::vector<Span> spans;
  spans.reserve(ranges.size());
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    const ByteRange& r = ranges[i];
    Region* region = found[i].get();
    if (region->kind() != RegionKind::kLazy || r.length == 0) continue;
    const std::uint64_t off = r.addr - region->base();
    const std::uint64_t last = off + std::min<std::uint64_t>(r.length, region->size() - off) - 1;
    spans.push_back({region, static_cast<std::size_t>(off / region->page_size()),
                     static_cast<std::size_t>(last / region->page_size()) + 1});
  }
  // Overlapping ranges must not count a page twice.
  std::ranges::sort(spans, [](const Span& a, const Span& b) {
    return a.region != b.region ? std::less<>()(a.region, b.region) : a.first < b.first;
  });
  std::map<int, std::size_t> need;
  for (std::size_t i = 0; i < spans.size();) {
    Span merged = spans[i];
    for (++i; i < spans.size() && spans[i].region == merged.region && spans[i].first <= merged.end;
         ++i) {
      merged.end = std::max(merged.end, spans[i].end);
    }
    need[merged.region->device()] += merged.region->PagesToBack(merged.first, merged.end);
  }
  for (const auto& [ordinal, pages] : need) {
    DeviceState* state = pages > 0 ? Existing(ordinal) : nullptr;
    if (state != nullptr && !state->pool->CanBack(pages)) return state->pool->Refuse(pages);
  }
  return Status::Ok();
}

Result<std::unique_ptr<Runtime>> Runtime::Create(Config config, SymbolLookup lookup,
                                                 BudgetFactory budget_factory) {
  auto driver = driver::Driver::Load(config.cuda_driver, lookup);
  if (!driver.ok()) return driver.status();
  auto impl = std::make_unique<Impl>();
  impl->config = std::move(config);
  impl->driver = std::move(driver).value();
  impl->budget_factory = std::move(budget_factory);
  // The constructor is private (runtime.h), which std::make_unique cannot reach.
  return std::unique_ptr<Runtime>(
      new Runtime(std::move(impl)));  // NOLINT(cppcoreguidelines-owning-memory)
}

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Runtime::~Runtime() {
  // Workers first, so that no background pass holds a region while it is torn down; then the
  // regions (their pages return to the pools); then the pools, budgets and contexts.
  for (auto& [ordinal, state] : impl_->devices) state->pool->StopWorker();
  for (auto& region : impl_->regions.TakeAll()) (void)region->Destroy();
  impl_->devices.clear();
}

const Config& Runtime::config() const {
  return impl_->config;
}
driver::Driver& Runtime::driver() {
  return *impl_->driver;
}

Result<std::uint64_t> Runtime::CreateRegion(int device, std::uint64_t size, RegionKind kind) {
  if (size == 0) return Status(Errc::kInvalid, "cannot create a region of 0 bytes");
  auto state = impl_->Device(device);
  if (!state.ok()) return state.status();
  PagePool& pool = *state.value()->pool;
  std::shared_ptr<Region> region;
  if (kind == RegionKind::kLazy) {
    auto r = LazyRegion::Create(pool, size);
    if (!r.ok()) return r.status();
    region = std::move(r).value();
  } else if (kind == RegionKind::kEager) {
    auto r = EagerRegion::Create(pool, size);
    if (!r.ok()) return r.status();
    region = std::move(r).value();
  } else {
    return Status(Errc::kInvalid, fmt::format("unknown region kind {}", static_cast<int>(kind)));
  }
  std::uint64_t base = region->base();
  KVC_LOG_DEBUG("created {} region 0x{:x} of {} bytes on GPU {}",
                kind == RegionKind::kLazy ? "lazy" : "eager", base, region->size(), device);
  impl_->regions.Insert(std::move(region));
  return base;
}

Status Runtime::DestroyRegion(std::uint64_t base) {
  std::shared_ptr<Region> region = impl_->regions.Remove(base);
  if (!region) {
    return {Errc::kNotFound, fmt::format("no kvcached region has base 0x{:x}", base)};
  }
  KVC_LOG_DEBUG("destroying region 0x{:x}", base);
  return region->Destroy();
}

bool Runtime::IsRegionBase(std::uint64_t base) const {
  return impl_->regions.IsBase(base);
}

int Runtime::RegionDevice(std::uint64_t addr) const {
  auto region = impl_->regions.Find(addr);
  return region ? region->device() : -1;
}

Status Runtime::Acquire(std::span<const ByteRange> ranges) {
  if (ranges.size() == 1) {  // the common case: no bookkeeping for a rollback
    auto region = impl_->regions.Find(ranges[0].addr);
    if (!region) return Impl::NotFound(ranges[0].addr);
    return region->Acquire(ranges[0].addr - region->base(), ranges[0].length);
  }
  // Every range's region is looked up once, before anything changes.
  std::vector<std::shared_ptr<Region>> found;
  found.reserve(ranges.size());
  for (const ByteRange& r : ranges) {
    found.push_back(impl_->regions.Find(r.addr));
    if (!found.back()) return Impl::NotFound(r.addr);
  }
  KVC_RETURN_IF_ERROR(impl_->CheckCanBack(ranges, found));
  struct Done {
    std::shared_ptr<Region> region;
    ByteRange range;
    SwappedPages swapped;
  };
  std::vector<Done> done;
  done.reserve(ranges.size());
  Status st;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    const ByteRange& r = ranges[i];
    Done d{std::move(found[i]), r, {}};
    st = d.region->Acquire(r.addr - d.region->base(), r.length, &d.swapped);
    if (!st.ok()) break;
    done.push_back(std::move(d));
  }
  if (!st.ok()) {  // all or nothing: undo the ranges already acquired, last first
    for (std::size_t i = done.size(); i > 0; --i) {
      Done& d = done[i - 1];
      d.region->Undo(d.range.addr - d.region->base(), d.range.length, d.swapped);
    }
  }
  return st;
}

Status Runtime::Release(std::span<const ByteRange> ranges) {
  Status first;
  for (const ByteRange& r : ranges) {
    auto region = impl_->regions.Find(r.addr);
    Status st =
        region ? region->Release(r.addr - region->base(), r.length) : Impl::NotFound(r.addr);
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

Result<PageState> Runtime::PageStateAt(std::uint64_t addr) const {
  auto region = impl_->regions.Find(addr);
  if (!region) return Impl::NotFound(addr);
  return region->StateAt(addr - region->base());
}

Result<RegionInfo> Runtime::Info(std::uint64_t addr) const {
  auto region = impl_->regions.Find(addr);
  if (!region) return Impl::NotFound(addr);
  return region->Info();
}

Result<DeviceStats> Runtime::Stats(int device) {
  if (device < 0) return Status(Errc::kInvalid, fmt::format("GPU {} does not exist", device));
  DeviceStats s;
  s.page_size = impl_->config.page_size();
  impl_->regions.ForEach([&](const Region& region) {
    if (region.device() != device) return;
    RegionInfo info = region.Info();
    ++s.regions;
    s.reserved_va_bytes += info.size;
    s.in_use_bytes += info.in_use_pages * info.page_size;
    s.mapped_free_bytes += info.mapped_free_pages * info.page_size;
  });
  if (device < Impl::kCountedDevices) {
    const std::int64_t passthrough =
        impl_->passthrough[static_cast<std::size_t>(device)].bytes.load(std::memory_order_relaxed);
    s.passthrough_bytes = passthrough > 0 ? static_cast<std::uint64_t>(passthrough) : 0;
  }
  // A device never used has no state: report what is known without creating one.
  DeviceState* state = impl_->Existing(device);
  if (state == nullptr) return s;
  PagePool& pool = *state->pool;
  PoolCounters& c = pool.counters();
  s.pool_bytes = pool.free_pages() * pool.page_size();
  s.zero_page_bytes = pool.zero_page_bytes();
  s.peak_physical_bytes = c.peak_physical_bytes.load(std::memory_order_relaxed);

  s.budget_limit_bytes = state->budget->View().limit;
  s.maps = c.maps.load(std::memory_order_relaxed);
  s.unmaps = c.unmaps.load(std::memory_order_relaxed);
  s.sync_maps = c.sync_maps.load(std::memory_order_relaxed);
  s.budget_refusals = c.budget_refusals.load(std::memory_order_relaxed);
  return s;
}

Result<std::uint64_t> Runtime::BudgetHeadroom(int device) {
  if (device < 0) return Status(Errc::kInvalid, fmt::format("GPU {} does not exist", device));
  // Creating the state would attach to the ledger and start the pool: not for a cheap query.
  DeviceState* state = impl_->Existing(device);
  return state == nullptr ? 0 : state->pool->Headroom();
}

Status Runtime::Trim(int device) {
  DeviceState* state = impl_->Existing(device);
  return state == nullptr ? Status::Ok() : state->pool->TrimNow();
}

Result<std::pair<std::uint64_t, std::uint64_t>> Runtime::BudgetMemInfo(int device) {
  auto state = impl_->Device(device);
  if (!state.ok()) return state.status();
  BudgetView v = state.value()->budget->View();
  // Free is what this process could still obtain: bounded by its own limit and by what the
  // other processes leave of the GPU budget. Pass-through allocations count as used.
  std::uint64_t mine = v.in_use + v.reserved + v.others;
  std::uint64_t by_limit = v.limit > mine ? v.limit - mine : 0;
  std::uint64_t used_all = v.all_charged + v.others;
  std::uint64_t by_budget = v.budget > used_all ? v.budget - used_all : 0;
  return std::make_pair(std::min(by_limit, by_budget), v.limit);
}

Result<std::pair<std::uint64_t, std::uint64_t>> Runtime::ProcessMemInfo(int device) {
  auto state = impl_->Device(device);
  if (!state.ok()) return state.status();
  const std::uint64_t total = state.value()->budget->View().limit;
  std::uint64_t allocated = 0;
  impl_->regions.ForEach([&](const Region& region) {
    if (region.device() == device) allocated += region.size();
  });
  if (device < Impl::kCountedDevices) {
    const std::int64_t passthrough =
        impl_->passthrough[static_cast<std::size_t>(device)].bytes.load(std::memory_order_relaxed);
    if (passthrough > 0) allocated += static_cast<std::uint64_t>(passthrough);
  }
  return std::make_pair(total > allocated ? total - allocated : 0, total);
}

Result<Budget::PressureInfo> Runtime::Pressure(int device) {
  auto state = impl_->Device(device);
  if (!state.ok()) return state.status();
  return state.value()->budget->Pressure();
}

Result<ShareVerdict> Runtime::Share(int device) {
  auto state = impl_->Device(device);
  if (!state.ok()) return state.status();
  return state.value()->budget->Share();
}

Result<ShareAction> Runtime::ShareActionNow(int device) {
  auto state = impl_->Device(device);
  if (!state.ok()) return state.status();
  return state.value()->budget->ShareActionNow();
}

Status Runtime::ReportShare(int device, std::uint64_t bytes, std::uint64_t requests) {
  auto state = impl_->Device(device);
  if (!state.ok()) return state.status();
  state.value()->budget->ReportShare(bytes, requests);
  return Status::Ok();
}

Status Runtime::SetShareUnit(int device, std::uint64_t bytes) {
  const std::uint64_t page = impl_->config.page_size();
  if (bytes % page != 0) {
    return {Errc::kInvalid, fmt::format("a share unit of {} bytes is not whole pages of {} bytes "
                                        "(KVCACHED_PAGE_SIZE_MB): give pages per unit x page size",
                                        bytes, page)};
  }
  auto state = impl_->Device(device);
  if (!state.ok()) return state.status();
  return state.value()->budget->SetShareUnit(bytes);
}

Status Runtime::ReportEngineSteps(int device, const EngineSteps& totals) {
  auto state = impl_->Device(device);
  if (!state.ok()) return state.status();
  state.value()->budget->ReportEngineSteps(totals);
  return Status::Ok();
}

void Runtime::NotePassthrough(int device, std::int64_t delta_bytes) noexcept {
  if (device < 0 || device >= Impl::kCountedDevices) return;
  Impl::Passthrough& p = impl_->passthrough[static_cast<std::size_t>(device)];
  p.bytes.fetch_add(delta_bytes, std::memory_order_relaxed);
  if (p.direct.load(std::memory_order_acquire)) {
    p.state.load(std::memory_order_relaxed)->budget->AddOther(delta_bytes);
    return;
  }
  p.pending.fetch_add(delta_bytes, std::memory_order_seq_cst);
  if (p.state.load(std::memory_order_seq_cst) == nullptr) return;  // Device() will hand it over
  // The state appeared meanwhile: Device() may or may not have taken our bytes. Wait for its
  // hand-over to finish (a few atomic operations), so that the budget sees this allocation's
  // bytes before its free's, then give over whatever is left.
  while (!p.direct.load(std::memory_order_acquire)) sched_yield();
  const std::int64_t left = p.pending.exchange(0, std::memory_order_seq_cst);
  if (left != 0) p.state.load(std::memory_order_relaxed)->budget->AddOther(left);
}

void Runtime::SetLabel(const std::string& label) {
  std::lock_guard<std::mutex> lock(impl_->devices_mu);
  impl_->label = label;
  for (auto& [ordinal, state] : impl_->devices) state->budget->SetLabel(label);
}

}  // namespace kvcached
