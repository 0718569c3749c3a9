#include "core/budget/local_budget.h"

namespace kvcached {

bool LocalBudget::TryCharge(std::uint64_t bytes) {
  std::uint64_t cur = charged_.load(std::memory_order_relaxed);
  do {
    if (cur + bytes > limit_.load(std::memory_order_relaxed)) return false;
  } while (!charged_.compare_exchange_weak(cur, cur + bytes, std::memory_order_acq_rel));
  std::uint64_t now = cur + bytes;
  std::uint64_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return true;
}

std::uint64_t LocalBudget::Headroom() const {
  const std::uint64_t limit = limit_.load(std::memory_order_relaxed);
  const std::uint64_t charged = charged_.load(std::memory_order_relaxed);
  return charged < limit ? limit - charged : 0;
}

void LocalBudget::Uncharge(std::uint64_t bytes) {
  charged_.fetch_sub(bytes, std::memory_order_acq_rel);
}
void LocalBudget::MoveToInUse(std::uint64_t bytes) {
  in_use_.fetch_add(bytes, std::memory_order_relaxed);
}
void LocalBudget::MoveToReserved(std::uint64_t bytes) {
  in_use_.fetch_sub(bytes, std::memory_order_relaxed);
}
void LocalBudget::AddOther(std::int64_t delta) {
  others_.fetch_add(delta, std::memory_order_relaxed);
}

BudgetView LocalBudget::View() const {
  BudgetView v;
  v.limit = limit_.load(std::memory_order_relaxed);
  v.budget = v.limit;
  std::uint64_t charged = charged_.load(std::memory_order_relaxed);
  v.in_use = in_use_.load(std::memory_order_relaxed);
  v.reserved = charged > v.in_use ? charged - v.in_use : 0;
  v.peak = peak_.load(std::memory_order_relaxed);
  std::int64_t o = others_.load(std::memory_order_relaxed);
  v.others = o > 0 ? static_cast<std::uint64_t>(o) : 0;
  v.all_charged = charged;
  return v;
}

}  // namespace kvcached
