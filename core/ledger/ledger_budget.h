// LedgerBudget: the Budget of one process on one GPU, kept in the GPU's shared ledger segment so
// that every process on the card draws from one budget (see docs/ledger.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
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
  // Claims a slot in `segment` (opened read-write) for the calling process, holding the
  // segment's attach lock meanwhile (so `kvctl delete` cannot remove it in between). kNotFound
  // when the segment was deleted before that: open it again.
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
  void NoteRefused(std::uint64_t bytes) override;
  void NoteServed() override;
  void RequestPressure(std::uint64_t bytes) override;
  bool TakePressureSignal() override;
  [[nodiscard]] PressureInfo Pressure() const override;
  void Heartbeat() override;
  void PublishActivity(const PoolActivity& activity) override;
  void SetLabel(const std::string& label) override;
  [[nodiscard]] BudgetView View() const override;
  [[nodiscard]] ShareVerdict Share() const override;
  [[nodiscard]] ShareAction ShareActionNow() const override;
  Status SetShareUnit(std::uint64_t bytes) override;
  void ReportShare(std::uint64_t bytes, std::uint64_t requests) override;
  void ReportEngineSteps(const EngineSteps& totals) override;

  // The engine's share (KVCACHED_SHARE_WEIGHT in thousandths, KVCACHED_SHARE_MIN), its page size
  // (its unit until the engine publishes one) and the preemption bound
  // (KVCACHED_SHARE_PREEMPT_MS). Written into the slot; `kvctl share` may change weight and
  // minimum later.
  void ConfigureShare(std::uint64_t weight_milli, std::uint64_t min_bytes, std::uint64_t granule,
                      std::uint64_t preempt_after_ns);

  [[nodiscard]] const Segment& segment() const { return *segment_; }
  [[nodiscard]] std::uint32_t slot_index() const { return slot_.load(); }
  // Reclaims dead processes' slots now (normally done on refusal and from Heartbeat).
  int ReclaimDead();
  // True once the segment became unusable under this process (truncated, overwritten): from then
  // on it is a process-local budget of the limit it last had (see Degrade).
  [[nodiscard]] bool local() const { return local_.load(); }

 private:
  LedgerBudget(std::shared_ptr<Segment> segment, ProcessIdentity me, std::uint32_t slot);
  [[nodiscard]] bool Forked() const;
  // False in a fork child (the slot belongs to the parent) or once the slot was taken from us.
  [[nodiscard]] bool Owns() const;
  [[nodiscard]] LedgerSlot& Slot() const;
  [[nodiscard]] std::uint64_t EffectiveLimit() const;
  bool MaybeReclaim(bool force);
  void PublishEngineSteps(LedgerSlot& slot) const;
  // The unit written into the slot: the engine's, else the page size (at most the budget).
  [[nodiscard]] std::uint64_t PublishedUnit() const;
  void Reattach();
  // The admission protocol on the shared slot (runs under the fault guard).
  bool ChargeShared(std::uint64_t bytes);
  // Process-local admission against local_limit_ (after Degrade).
  bool ChargeLocal(std::uint64_t bytes);
  // Runs fn on the shared segment under the fault guard; false (and the budget turned local)
  // when the segment was truncated under it, or when it is local already.
  template <class F>
  bool OnLedger(F&& fn);
  // The same for the const readers: a read that finds the segment truncated still turns the
  // budget local (Degrade), the one change a reader can cause.
  template <class F>
  bool OnLedger(F&& fn) const;
  // Stops using the segment for good: says so once, loudly (the segment, `reason`, the fix), and
  // keeps admitting against a process-local limit. Holdings are kept (the local counters).
  void Degrade(const std::string& reason);

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
  std::atomic<std::uint64_t> peak_{0};
  std::atomic<std::uint64_t> limit_seen_{kNoLimit};  // the slot's limit word when last read
  // The slot's share words when last read (a re-registration keeps them).
  mutable std::atomic<std::uint64_t> share_weight_seen_{0};
  mutable std::atomic<std::uint64_t> share_min_seen_{0};
  // The engine's last reported totals (a re-registration publishes them in the new slot).
  std::atomic<std::uint64_t> engine_steps_{0};
  std::atomic<std::uint64_t> engine_hook_ns_{0};
  std::atomic<std::uint64_t> engine_hook_c_calls_{0};
  std::atomic<std::uint64_t> share_granule_{2ULL << 20U};
  std::atomic<std::uint64_t> share_unit_{0};  // as published by the engine; 0: the granule
  std::atomic<std::uint64_t> preempt_after_ns_{500ULL * 1000 * 1000};
  std::atomic<bool> starved_{false};  // the latest refusal opened or continued an episode
  std::atomic<bool> local_{false};
  std::atomic<std::uint64_t> local_limit_{0};
  std::atomic<bool> unlinked_reported_{false};
  std::atomic<std::uint64_t> last_health_ns_{0};
  std::atomic<std::uint64_t> pressure_seen_{0};
  std::atomic<std::uint64_t> own_pressure_requests_{0};
  std::atomic<std::uint64_t> last_reclaim_ns_{0};
  std::atomic<bool> lost_{false};
  // In-process only (never a lock in shared memory). Every operation that touches the slot holds
  // it shared; Reattach holds it exclusively, so that the holdings it re-registers in a new slot
  // are not changed meanwhile by a charge or release still aimed at the old slot.
  mutable std::shared_mutex slot_mu_;
  std::mutex label_mu_;  // label_ (taken after slot_mu_ when both are needed)
};

}  // namespace kvcached::ledger
