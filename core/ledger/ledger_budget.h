// LedgerBudget: the Budget of one process on one GPU, kept in the GPU's shared ledger segment so
// that every process on the card draws from one budget (see docs/ledger.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "core/budget/budget.h"
#include "core/common/status.h"
#include "core/ledger/ledger_process.h"
#include "core/ledger/ledger_segment.h"

namespace kvcached::ledger {

class LedgerBudget;
// Test seam: called by an admission that passed its check, between reading the ledger and
// committing. Tests sleep there to widen the race window that the protocol must close (its
// correctness does not depend on timing). Null, and one relaxed load, in production.
using AdmissionHook = void (*)(const LedgerBudget& budget);
void SetAdmissionHookForTesting(AdmissionHook hook);

class LedgerBudget final : public Budget {
 public:
  // Claims a slot in `segment` (opened read-write) for the calling process.
  static Result<std::unique_ptr<LedgerBudget>> Attach(std::shared_ptr<Segment> segment,
                                                      const std::string& label);
  LedgerBudget(const LedgerBudget&) = delete;
  LedgerBudget& operator=(const LedgerBudget&) = delete;
  LedgerBudget(LedgerBudget&&) = delete;
  LedgerBudget& operator=(LedgerBudget&&) = delete;
  ~LedgerBudget() override;  // frees the slot

  bool TryCharge(std::uint64_t bytes) override;
  [[nodiscard]] std::uint64_t Headroom() const override;
  void Uncharge(std::uint64_t bytes) override;
  void MoveToInUse(std::uint64_t bytes) override;
  void MoveToReserved(std::uint64_t bytes) override;
  void AddOther(std::int64_t delta_bytes) override;
  void RequestPressure(std::uint64_t bytes) override;
  bool TakePressureSignal() override;
  [[nodiscard]] PressureInfo Pressure() const override;
  void Heartbeat() override;
  void PublishActivity(const PoolActivity& activity) override;
  void SetLabel(const std::string& label) override;
  [[nodiscard]] BudgetView View() const override;

  [[nodiscard]] const Segment& segment() const { return *segment_; }
  [[nodiscard]] std::uint32_t slot_index() const { return slot_.load(); }
  // Reclaims dead processes' slots now (normally done on refusal and from Heartbeat).
  int ReclaimDead();

 private:
  LedgerBudget(std::shared_ptr<Segment> segment, ProcessIdentity me, std::uint32_t slot);
  // False in a fork child (the slot belongs to the parent) or once the slot was taken from us.
  [[nodiscard]] bool Owns() const;
  [[nodiscard]] LedgerSlot& Slot() const;
  [[nodiscard]] std::uint64_t EffectiveLimit() const;
  bool MaybeReclaim(bool force);
  void Reattach();

  std::shared_ptr<Segment> segment_;
  ProcessIdentity me_;
  std::atomic<std::uint32_t> slot_;
  std::atomic<std::uint64_t> owner_word_;
  std::uint64_t fork_generation_;
  std::string label_;
  // What this process holds, kept locally too so that a slot taken away (a stale-heartbeat
  // reclaim from another pid namespace) can be re-registered with the right numbers.
  std::atomic<std::uint64_t> charged_{0};
  std::atomic<std::uint64_t> in_use_{0};
  std::atomic<std::uint64_t> other_{0};
  std::atomic<std::uint64_t> pressure_seen_{0};
  std::atomic<std::uint64_t> own_pressure_requests_{0};
  std::atomic<std::uint64_t> last_reclaim_ns_{0};
  std::atomic<bool> lost_{false};
  std::mutex reattach_mutex_;  // in-process only: never a lock in shared memory
};

}  // namespace kvcached::ledger
