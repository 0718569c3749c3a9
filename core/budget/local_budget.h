// LocalBudget: the in-process Budget (one process, one limit), used when no shared ledger is
// attached and in tests. Lock-free.
#pragma once

#include <atomic>
#include <cstdint>

#include "core/budget/budget.h"

namespace kvcached {

class LocalBudget final : public Budget {
 public:
  explicit LocalBudget(std::uint64_t limit_bytes) : limit_(limit_bytes) {}

  bool TryCharge(std::uint64_t bytes) override;
  [[nodiscard]] std::uint64_t Headroom() const override;
  void Uncharge(std::uint64_t bytes) override;
  void MoveToInUse(std::uint64_t bytes) override;
  void MoveToReserved(std::uint64_t bytes) override;
  void AddOther(std::int64_t delta_bytes) override;
  void RequestPressure(std::uint64_t /*bytes*/) override {}
  bool TakePressureSignal() override { return false; }
  [[nodiscard]] BudgetView View() const override;

  void SetLimit(std::uint64_t bytes) { limit_.store(bytes, std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> limit_;
  std::atomic<std::uint64_t> charged_{0};
  std::atomic<std::uint64_t> in_use_{0};
  std::atomic<std::uint64_t> peak_{0};
  std::atomic<std::int64_t> others_{0};
};

}  // namespace kvcached
