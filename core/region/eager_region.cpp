#include "core/region/eager_region.h"

#include <fmt/format.h>

#include "core/driver/context.h"
#include "core/pool/page_pool.h"

namespace kvcached {

Result<std::shared_ptr<EagerRegion>> EagerRegion::Create(PagePool& pool, std::uint64_t size) {
  if (size == 0) return Status(Errc::kInvalid, "cannot create a region of 0 bytes");
  std::uint64_t rounded = RoundUpToPage(size, pool.page_size());
  if (rounded == 0) {
    return Status(Errc::kInvalid, fmt::format("region size {} is too large", size));
  }
  auto scope = driver::ScopedContext::Enter(pool.driver(), pool.context());
  if (!scope.ok()) return scope.status();
  auto va = driver::VaReservation::Reserve(pool.driver(), rounded, pool.page_size());
  if (!va.ok()) return va.status();
  auto region = std::make_shared<EagerRegion>(Key{}, pool, std::move(va).value());
  // On failure the destructor unmaps and releases whatever was made and uncharges.
  KVC_RETURN_IF_ERROR(region->Back());
  return region;
}

EagerRegion::EagerRegion(Key /*key*/, PagePool& pool, driver::VaReservation va)
    : Region(va.ptr(), va.size(), pool.page_size(), pool.ordinal(), RegionKind::kEager),
      pool_(pool),
      va_(std::move(va)) {}

EagerRegion::~EagerRegion() {
  (void)Destroy();
}

Status EagerRegion::Back() {
  KVC_RETURN_IF_ERROR(pool_.Charge(size()));
  charged_ = true;
  const std::uint64_t page = page_size();
  std::uint64_t chunk = size();
  std::uint64_t offset = 0;
  while (offset < size()) {
    std::uint64_t want = std::min(chunk, size() - offset);
    auto handle = driver::PhysicalHandle::Create(pool_.driver(), pool_.cu_device(), want);
    if (!handle.ok()) {
      // The driver may refuse one huge allocation yet grant smaller ones: halve and retry.
      if (want <= page) return handle.status();
      chunk = std::max(page, want / 2 / page * page);
      continue;
    }
    auto mapping =
        driver::Mapping::Map(pool_.driver(), base() + offset, want, handle.value().get());
    if (!mapping.ok()) {
      return mapping.status();  // the handle is released by its destructor
    }
    chunks_.push_back(Chunk{std::move(handle).value(), std::move(mapping).value()});
    offset += want;
  }
  KVC_RETURN_IF_ERROR(driver::SetAccess(pool_.driver(), pool_.cu_device(), base(), size()));
  pool_.MoveToInUse(size());
  in_use_ = true;
  return Status::Ok();
}

Status EagerRegion::Acquire(std::uint64_t offset, std::uint64_t length, SwappedPages* /*swapped*/) {
  std::size_t first = 0;
  std::size_t end = 0;
  KVC_RETURN_IF_ERROR(PageSpan(offset, length, first, end));
  std::lock_guard<std::mutex> lock(mu_);
  return destroyed_ ? Gone() : Status::Ok();
}

Status EagerRegion::Release(std::uint64_t offset, std::uint64_t length) {
  return Acquire(offset, length, nullptr);
}

Result<PageState> EagerRegion::StateAt(std::uint64_t offset) const {
  if (offset >= size()) {
    return Status(Errc::kInvalid, fmt::format("0x{:x} is outside region 0x{:x} of {} bytes",
                                              base() + offset, base(), size()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (destroyed_) return Gone();
  return PageState::kInUse;
}

RegionInfo EagerRegion::Info() const {
  RegionInfo info;
  info.base = base();
  info.size = size();
  info.page_size = page_size();
  info.pages = pages();
  info.in_use_pages = pages();
  info.device = device();
  info.kind = RegionKind::kEager;
  return info;
}

Status EagerRegion::Destroy() {
  std::lock_guard<std::mutex> lock(mu_);
  if (destroyed_) return Status::Ok();
  destroyed_ = true;
  Status first;
  auto keep_first = [&first](const Status& st) {
    if (!st.ok() && first.ok()) first = st;
  };
  auto scope = driver::ScopedContext::Enter(pool_.driver(), pool_.context());
  std::uint64_t still_held = 0;  // bytes the driver refused to release: they stay charged
  for (Chunk& c : chunks_) {
    Status st = c.mapping.FreeRetryingOnce();
    if (st.ok()) st = c.handle.FreeRetryingOnce();
    keep_first(st);
    if (!st.ok()) still_held += c.handle.size();
  }
  if (in_use_) pool_.MoveToReserved(size());
  // Creation may have stopped half way: what was never created is returned too.
  if (charged_) pool_.Uncharge(size() - still_held);
  chunks_.clear();
  keep_first(va_.FreeRetryingOnce());
  return first;
}

}  // namespace kvcached
