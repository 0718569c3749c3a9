// Budget: where every physical byte the core holds is accounted. The page pool asks it before
// creating a physical page; in-process (LocalBudget) or shared per GPU (core/ledger).
#pragma once

#include <cstdint>
#include <string>

#include "core/budget/fair_share.h"
#include "core/common/status.h"

namespace kvcached {

struct BudgetView {
  std::uint64_t limit = 0;        // what this process may hold (min of its limit and the budget)
  std::uint64_t budget = 0;       // the whole GPU budget shared by all processes
  std::uint64_t in_use = 0;       // this process: physical bytes holding engine data
  std::uint64_t reserved = 0;     // this process: physical bytes held but not in use
  std::uint64_t peak = 0;         // this process: peak in_use + reserved
  std::uint64_t others = 0;       // this process: bytes passed through to the real allocator
  std::uint64_t all_charged = 0;  // every process on this budget: in_use + reserved
};

// What the page pool did since the process started, published through the budget for
// `kvctl metrics` (monotonic counts).
struct PoolActivity {
  std::uint64_t pages_mapped = 0;
  std::uint64_t pages_unmapped = 0;
  std::uint64_t sync_maps = 0;
  std::uint64_t budget_refusals = 0;
};

// The engine hook's cumulative totals for this process and device (kvcached_report_engine_steps),
// published for `kvctl` from outside the engine.
struct EngineSteps {
  std::uint64_t steps = 0;
  std::uint64_t hook_ns = 0;
  std::uint64_t c_calls = 0;
};

class Budget {
 public:
  Budget() = default;
  Budget(const Budget&) = delete;
  Budget& operator=(const Budget&) = delete;
  Budget(Budget&&) = delete;
  Budget& operator=(Budget&&) = delete;
  virtual ~Budget() = default;

  // Admits `bytes` of new physical memory into the reserved column. Atomic against the GPU budget
  // and this process's limit: returns false (nothing charged) when either would be exceeded.
  virtual bool TryCharge(std::uint64_t bytes) = 0;
  // Bytes a TryCharge could admit now (non-binding: others may take them first). Lets a request
  // that needs many pages be refused before any of them is mapped.
  [[nodiscard]] virtual std::uint64_t Headroom() const = 0;
  // Returns reserved bytes (the physical memory was released).
  virtual void Uncharge(std::uint64_t bytes) = 0;
  // Moves already-charged bytes between the reserved and in-use columns.
  virtual void MoveToInUse(std::uint64_t bytes) = 0;
  virtual void MoveToReserved(std::uint64_t bytes) = 0;
  // Records allocations that bypass the budget (passed through to the real allocator); signed.
  virtual void AddOther(std::int64_t delta_bytes) = 0;

  // The engine asked for `bytes` of KV pages and the budget refused them (the page pool calls
  // this; set-up reservations such as map-ahead do not): the refusal opens
  // or continues its starvation episode when it is below its fair share (docs/sharing.md).
  virtual void NoteRefused(std::uint64_t /*bytes*/) {}
  // The engine's request for KV pages was granted: during a starvation episode it is not being
  // refused now, so nobody gives for it any more; a refusal soon after continues the episode
  // (the preemption bound keeps counting from its first refusal). Cheap when not starved.
  virtual void NoteServed() {}

  // Pressure: a refused process asks the others to give back reserved memory.
  virtual void RequestPressure(std::uint64_t bytes) = 0;
  // True once per new request from another process since the last call (polled by the pool's
  // background thread; must be cheap: one atomic load).
  virtual bool TakePressureSignal() = 0;
  // The latest pressure request on this budget: a counter that grows with every request, and
  // the pid that made the last one (0 when none). Not consumed: engines poll it to give back
  // memory that only they can free (cached KV blocks) when another process is refused.
  struct PressureInfo {
    std::uint64_t seq = 0;
    int pid = 0;
  };
  [[nodiscard]] virtual PressureInfo Pressure() const { return {}; }
  // Liveness: called periodically by the background thread.
  virtual void Heartbeat() {}
  // Publishes the pool's counters where kvctl can read them; called with every heartbeat.
  virtual void PublishActivity(const PoolActivity& /*activity*/) {}
  // Name shown by kvctl for this process (engine name).
  virtual void SetLabel(const std::string& /*label*/) {}

  // Fairness between the engines sharing the budget (docs/sharing.md): what the policy asks of
  // this process now. A budget not shared with anyone never asks anything.
  [[nodiscard]] virtual ShareVerdict Share() const { return {}; }
  // Share().action alone, where a cheaper answer exists (an engine asks every step).
  [[nodiscard]] virtual ShareAction ShareActionNow() const { return Share().action; }
  // The smallest amount the engine takes or gives at a time, in bytes (0: the page size); shares
  // are reachable in whole units. A budget not shared with anyone keeps nothing.
  virtual Status SetShareUnit(std::uint64_t /*bytes*/) { return Status::Ok(); }
  // The engine gave back `bytes` and preempted `requests` because the policy asked (kvctl).
  virtual void ReportShare(std::uint64_t /*bytes*/, std::uint64_t /*requests*/) {}
  // Stores the engine hook's totals where kvctl reads them (the last report wins). A budget no
  // other process can read keeps nothing.
  virtual void ReportEngineSteps(const EngineSteps& /*totals*/) {}

  [[nodiscard]] virtual BudgetView View() const = 0;
};

}  // namespace kvcached
