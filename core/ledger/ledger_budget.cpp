#include "core/ledger/ledger_budget.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "core/common/format_bytes.h"
#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_share.h"
#include "core/ledger/ledger_slots.h"
#include "core/ledger/ledger_validate.h"
#include "core/log/log.h"

// Admission protocol (why the sum of `charged` over all slots never exceeds the budget, with no
// lock anywhere).
//
// Each slot is written only by the process named in its owner word (ledger_slots.h). To admit B
// bytes, process P:
//   (W)  adds B to its own `tentative`                                   (seq_cst RMW)
//   (R)  reads every non-free slot: `tentative`, then `charged`          (seq_cst loads)
//   if the sum S <= budget (and P's own tentative + charged <= P's limit):
//   (C)  adds B to `charged`, then (T) subtracts B from `tentative`      (seq_cst RMWs)
//   else it subtracts B from `tentative` and refuses (after a few retries with backoff when the
//   refusal came only from other processes' tentative bytes, i.e. contention).
//
// Invariant 1: between (W) and (T), P's bytes are in tentative + charged; (C) precedes (T), so
// they are never in neither. A reader that loads tentative before charged therefore sees them
// (if it reads tentative before (T) it sees them there, else its later load of charged comes
// after (C)).
// Invariant 2: all seq_cst operations form one total order S. Take two admissions X (by P) and Y
// (by Q) that both succeed while both hold their bytes. If X's read of Q's slot came before Y's
// (W) in S, then X's (W) < X's read < Y's (W) < Y's read of P's slot, so Y saw X's bytes. Hence
// of any two admissions, the later one (by the order of their (W)) saw the earlier one's bytes,
// and the last admission of any set of bytes held at once saw all the others plus its own: the
// sum of the holdings it checked against the budget is at least what is held. So
// sum(charged) <= budget at every instant. Free slots are skipped: a slot read as free after our
// (W) can only gain bytes through an admission whose (W) comes later, which sees ours.
//
// kill -9: nothing is ever locked or waited on. A process killed between (W) and (T) leaves bytes
// in its slot; they keep counting (conservatively) until someone finds the owner dead and
// reclaims the slot (a CAS on the owner word, then zeroing), after which its budget is free again.
// Its device memory was freed by the driver when it died.
//
// Per-process limit: checked against the slot's `limit` word at each admission, so a limit
// stored by `kvctl limit` takes effect at the next admission without any polling.
//
// A segment that breaks under a live process (truncated: every access is guarded against the
// SIGBUS, see ledger_fault_guard.h; header overwritten: the heartbeat checks it) is abandoned:
// the process keeps its holdings in its own counters and admits against a process-local limit
// from then on (Degrade), rather than crash or stop taking memory.

namespace kvcached::ledger {
namespace {

constexpr int kMaxAttempts = 6;
constexpr std::uint64_t kReclaimIntervalNs = 10ULL * 1000 * 1000;  // on refusal: at most 100/s
constexpr std::uint64_t kHeartbeatReclaimNs = 1000ULL * 1000 * 1000;
constexpr std::uint64_t kHealthIntervalNs = 200ULL * 1000 * 1000;

std::atomic<std::uint64_t> g_fork_generation{0};
std::atomic<AdmissionHook> g_admission_hook{nullptr};
void OnForkChild() {
  g_fork_generation.fetch_add(1, std::memory_order_relaxed);
}

void RegisterForkHandler() {
  static std::once_flag once;
  std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, &OnForkChild); });
}

// Contention backoff: a yield, then short randomised sleeps (worst case about 1.3 ms in all).
void Backoff(int attempt) {
  if (attempt == 0) {
    ::sched_yield();
    return;
  }
  thread_local std::minstd_rand rng(
      static_cast<unsigned>(::getpid()) ^
      static_cast<unsigned>(std::hash<std::thread::id>{}(std::this_thread::get_id())));
  const unsigned base_us = 20U << std::min(attempt, 5);
  std::this_thread::sleep_for(std::chrono::microseconds(base_us / 2 + rng() % base_us));
}

// Subtracts without wrapping below zero (a caller's accounting bug must not make the segment
// invalid for everybody else).
void SatSub(std::uint64_t& word, std::uint64_t bytes) {
  auto ref = Atomic(word);
  std::uint64_t cur = ref.load();
  while (!ref.compare_exchange_weak(cur, cur > bytes ? cur - bytes : 0)) {
  }
}
void SatSubLocal(std::atomic<std::uint64_t>& v, std::uint64_t bytes) {
  std::uint64_t cur = v.load();
  while (!v.compare_exchange_weak(cur, cur > bytes ? cur - bytes : 0)) {
  }
}
void RaiseTo(std::uint64_t& word, std::uint64_t value) {
  auto ref = Atomic(word);
  std::uint64_t cur = ref.load(std::memory_order_relaxed);
  while (value > cur && !ref.compare_exchange_weak(cur, value, std::memory_order_relaxed)) {
  }
}

}  // namespace

void SetAdmissionHookForTesting(AdmissionHook hook) {
  g_admission_hook.store(hook);
}

Result<std::unique_ptr<LedgerBudget>> LedgerBudget::Attach(std::shared_ptr<Segment> segment,
                                                           const std::string& label) {
  if (!segment || !segment->writable()) {
    return Status(Errc::kInvalid, "ledger budget needs a segment opened read-write");
  }
  RegisterForkHandler();
  ProcessIdentity me = CurrentProcess();
  // Held until the slot is ours: `kvctl delete` (exclusive) then either saw us or we see that
  // it deleted the file (kNotFound).
  auto lock = segment->LockForAttach();
  if (!lock.ok()) return lock.status();
  Result<std::uint32_t> slot = Status(Errc::kInvalid, "");
  if (!segment->Guard([&] { slot = ClaimSlot(*segment, me, label); })) {
    return Status(Errc::kInvalid,
                  SegmentProblem(segment->path(), "it was truncated while this process attached"));
  }
  if (!slot.ok()) return slot.status();
  std::unique_ptr<LedgerBudget> budget(new LedgerBudget(std::move(segment), me, slot.value()));
  budget->label_ = label;
  return budget;
}

LedgerBudget::LedgerBudget(std::shared_ptr<Segment> segment, ProcessIdentity me, std::uint32_t slot)
    : segment_(std::move(segment)),
      me_(me),
      slot_(slot),
      owner_word_(PackOwner(SlotState::kLive, me.pid, me.start_ticks)),
      fork_generation_(g_fork_generation.load()) {}

LedgerBudget::~LedgerBudget() {
  if (Forked() || local_.load()) return;  // the parent's slot, or a segment given up
  (void)segment_->Guard([&] { ReleaseSlot(*segment_, slot_.load(), owner_word_.load()); });
}

bool LedgerBudget::Forked() const {
  return fork_generation_ != g_fork_generation.load(std::memory_order_relaxed);
}

LedgerSlot& LedgerBudget::Slot() const {
  return segment_->slot(slot_.load(std::memory_order_relaxed));
}

bool LedgerBudget::Owns() const {
  if (Forked()) return false;
  if (lost_.load(std::memory_order_relaxed)) return false;
  return LoadRelaxed(Slot().owner) == owner_word_.load(std::memory_order_relaxed);
}

std::uint64_t LedgerBudget::EffectiveLimit() const {
  const std::uint64_t limit = Load(Slot().limit);
  return limit == kNoLimit ? segment_->budget() : std::min(limit, segment_->budget());
}

template <class F>
bool LedgerBudget::OnLedger(F&& fn) {
  if (local_.load(std::memory_order_relaxed)) return false;
  if (segment_->Guard(std::forward<F>(fn))) return true;
  Degrade("it was truncated while in use (an access past its new end was caught)");
  return false;
}

template <class F>
bool LedgerBudget::OnLedger(F&& fn) const {
  // LedgerBudgets are never const objects; only the degrade on a truncated segment writes.
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast)
  return const_cast<LedgerBudget*>(this)->OnLedger(std::forward<F>(fn));
}

void LedgerBudget::Degrade(const std::string& reason) {
  const std::uint64_t seen = limit_seen_.load();
  local_limit_.store(seen == kNoLimit ? segment_->budget() : std::min(seen, segment_->budget()));
  bool expected = false;
  if (!local_.compare_exchange_strong(expected, true)) return;
  log::ErrorOnce(
      "ledger-degraded-" + segment_->name(),
      fmt::format("kvcached: ledger segment {} cannot be used any more: {}. This process "
                  "continues with a process-local budget of {} (its KV cache keeps working but "
                  "is no longer shared elastically with the other engines on this GPU). Fix: stop "
                  "the engines on this GPU, `kvctl delete {}` (or `kvctl delete --force {}`), "
                  "and start them again",
                  segment_->path(), reason, FormatBytes(local_limit_.load()), segment_->name(),
                  segment_->name()));
}

bool LedgerBudget::MaybeReclaim(bool force) {
  const std::uint64_t now = BoottimeNs();
  std::uint64_t last = last_reclaim_ns_.load(std::memory_order_relaxed);
  if (!force && now - last < kReclaimIntervalNs) return false;
  if (!last_reclaim_ns_.compare_exchange_strong(last, now)) return false;  // another thread does it
  return ReclaimDeadSlots(*segment_, me_) > 0;
}

int LedgerBudget::ReclaimDead() {
  std::shared_lock lock(slot_mu_);
  int n = 0;
  (void)OnLedger([&] { n = ReclaimDeadSlots(*segment_, me_); });
  return n;
}

bool LedgerBudget::ChargeLocal(std::uint64_t bytes) {
  const std::uint64_t limit = local_limit_.load(std::memory_order_relaxed);
  std::uint64_t cur = charged_.load();
  do {
    if (bytes > limit || cur > limit - bytes) return false;
  } while (!charged_.compare_exchange_weak(cur, cur + bytes));
  const std::uint64_t now = cur + bytes;
  std::uint64_t peak = peak_.load(std::memory_order_relaxed);
  while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  return true;
}

bool LedgerBudget::TryCharge(std::uint64_t bytes) {
  if (bytes == 0) return true;
  if (Forked()) return false;
  std::shared_lock lock(slot_mu_);
  bool admitted = false;
  if (OnLedger([&] { admitted = ChargeShared(bytes); })) return admitted;
  return local_.load() && ChargeLocal(bytes);
}

bool LedgerBudget::ChargeShared(std::uint64_t bytes) {
  if (!Owns()) {
    lost_.store(true);
    return false;
  }
  LedgerSlot& me = Slot();
  const std::uint64_t budget = segment_->budget();
  Atomic(me.heartbeat_ns).store(BoottimeNs(), std::memory_order_relaxed);
  bool reclaimed_once = false;
  for (int attempt = 0;; ++attempt) {
    limit_seen_.store(Load(me.limit), std::memory_order_relaxed);
    const std::uint64_t limit = EffectiveLimit();
    if (bytes > limit || Load(me.charged) > limit - bytes) return false;  // over its own limit

    Atomic(me.tentative).fetch_add(bytes);        // (W)
    const LedgerSums sums = SumSlots(*segment_);  // (R)
    const std::uint64_t own = SatAdd(Load(me.tentative), Load(me.charged));
    if (sums.claimed <= budget && own <= limit) {
      if (AdmissionHook hook = g_admission_hook.load(std::memory_order_relaxed)) hook(*this);
      Atomic(me.charged).fetch_add(bytes);    // (C)
      Atomic(me.tentative).fetch_sub(bytes);  // (T)
      const std::uint64_t now_charged = charged_.load() + bytes;
      RaiseTo(me.peak, now_charged);
      // Last, after every access to the mapping: a fault above leaves the local books as they
      // were, and the charge is then retried against the local limit.
      charged_.fetch_add(bytes);
      std::uint64_t peak = peak_.load(std::memory_order_relaxed);
      while (now_charged > peak &&
             !peak_.compare_exchange_weak(peak, now_charged, std::memory_order_relaxed)) {
      }
      return true;
    }
    Atomic(me.tentative).fetch_sub(bytes);

    // Refused by its own limit: nothing to retry. By committed bytes alone: the budget is really
    // full, unless dead processes still hold part of it. Only by others' tentative bytes:
    // contention, worth a short retry.
    if (SatAdd(Load(me.charged), bytes) > limit) return false;
    if (SatAdd(sums.charged, bytes) > budget) {
      if (!reclaimed_once && attempt < kMaxAttempts && MaybeReclaim(false)) {
        reclaimed_once = true;
        continue;
      }
      // Really full. Whether this starts a starvation episode is the caller's to say
      // (NoteRefused): a set-up reservation refused at start-up is no demand for KV memory.
      return false;
    }
    if (attempt + 1 >= kMaxAttempts) return false;
    Backoff(attempt);
  }
}

std::uint64_t LedgerBudget::Headroom() const {
  if (Forked()) return 0;
  std::shared_lock lock(slot_mu_);
  std::uint64_t headroom = 0;
  if (OnLedger([&] {
        if (!Owns()) return;
        const std::uint64_t limit = EffectiveLimit();
        const std::uint64_t own = Load(Slot().charged);
        const std::uint64_t claimed = SumSlots(*segment_).claimed;
        const std::uint64_t budget = segment_->budget();
        const std::uint64_t by_limit = own < limit ? limit - own : 0;
        const std::uint64_t by_budget = claimed < budget ? budget - claimed : 0;
        headroom = std::min(by_limit, by_budget);
      })) {
    return headroom;
  }
  if (!local_.load()) return 0;
  const std::uint64_t limit = local_limit_.load();
  const std::uint64_t charged = charged_.load();
  return charged < limit ? limit - charged : 0;
}

void LedgerBudget::Uncharge(std::uint64_t bytes) {
  std::shared_lock lock(slot_mu_);
  SatSubLocal(charged_, bytes);
  (void)OnLedger([&] {
    if (Owns()) SatSub(Slot().charged, bytes);
  });
}

void LedgerBudget::MoveToInUse(std::uint64_t bytes) {
  std::shared_lock lock(slot_mu_);
  in_use_.fetch_add(bytes, std::memory_order_relaxed);
  (void)OnLedger([&] {
    if (Owns()) Atomic(Slot().in_use).fetch_add(bytes, std::memory_order_relaxed);
  });
}

void LedgerBudget::MoveToReserved(std::uint64_t bytes) {
  std::shared_lock lock(slot_mu_);
  SatSubLocal(in_use_, bytes);
  (void)OnLedger([&] {
    if (Owns()) SatSub(Slot().in_use, bytes);
  });
}

void LedgerBudget::AddOther(std::int64_t delta_bytes) {
  // Kept within [0, GPU total] so that the segment stays valid whatever the hooks report.
  std::shared_lock lock(slot_mu_);
  const std::uint64_t total = segment_->gpu_total();
  std::uint64_t cur = other_.load();
  std::uint64_t next = 0;
  do {
    if (delta_bytes < 0) {
      const auto drop = static_cast<std::uint64_t>(-(delta_bytes + 1)) + 1;
      next = cur > drop ? cur - drop : 0;
    } else {
      next = std::min(SatAdd(cur, static_cast<std::uint64_t>(delta_bytes)), total);
    }
  } while (!other_.compare_exchange_weak(cur, next));
  (void)OnLedger([&] {
    if (Owns()) Atomic(Slot().other).store(next, std::memory_order_relaxed);
  });
}

void LedgerBudget::RequestPressure(std::uint64_t bytes) {
  if (Forked()) return;
  (void)OnLedger([&] {
    SegmentHeader& h = segment_->header();
    own_pressure_requests_.fetch_add(1);
    Atomic(h.pressure_bytes)
        .store(std::min(bytes, segment_->gpu_total()), std::memory_order_relaxed);
    Atomic(h.pressure_pid).store(me_.pid, std::memory_order_relaxed);
    Atomic(h.pressure_ns).store(BoottimeNs(), std::memory_order_relaxed);
    Atomic(h.pressure_seq).fetch_add(1);
  });
}

Budget::PressureInfo LedgerBudget::Pressure() const {
  PressureInfo info;
  (void)OnLedger([&] {
    const auto& h = segment_->header();
    info = {LoadRelaxed(h.pressure_seq), static_cast<int>(LoadRelaxed(h.pressure_pid))};
  });
  return info;
}

bool LedgerBudget::TakePressureSignal() {
  std::uint64_t seq = 0;
  if (!OnLedger([&] { seq = LoadRelaxed(segment_->header().pressure_seq); })) return false;
  if (seq == pressure_seen_.load(std::memory_order_relaxed)) return false;  // the common case
  const std::uint64_t prev = pressure_seen_.exchange(seq);
  if (prev == seq) return false;
  // Requests made by this process do not ask itself to give memory back. A request counted here
  // before it reached the sequence shows up next time as a (harmless) extra signal.
  const std::uint64_t mine = own_pressure_requests_.exchange(0);
  return seq - prev > mine;
}

void LedgerBudget::Heartbeat() {
  if (Forked() || local_.load()) return;
  // A look at the file itself, a few times a second (the heartbeat runs every 20 ms): shrunk, or
  // its header rewritten (corrupt).
  std::uint64_t checked = last_health_ns_.load(std::memory_order_relaxed);
  const std::uint64_t now_ns = BoottimeNs();
  if (now_ns - checked >= kHealthIntervalNs &&
      last_health_ns_.compare_exchange_strong(checked, now_ns)) {
    if (auto problem = segment_->Health()) {
      Degrade(*problem);
      return;
    }
    if (segment_->Unlinked() && !unlinked_reported_.exchange(true)) {
      KVC_LOG_WARN(
          "kvcached: ledger segment {} was deleted (or replaced) while this process used it; "
          "it keeps sharing the budget with the engines already attached to it, but engines "
          "started from now on use a new segment with a budget of their own. Restart the "
          "engines on this GPU to share one budget again",
          segment_->path());
    }
  }
  bool lost = false;
  (void)OnLedger([&] { lost = lost_.load() || LoadRelaxed(Slot().owner) != owner_word_.load(); });
  if (lost) Reattach();
  std::shared_lock lock(slot_mu_);
  (void)OnLedger(
      [&] { Atomic(Slot().heartbeat_ns).store(BoottimeNs(), std::memory_order_relaxed); });
  const std::uint64_t now = BoottimeNs();
  if (now - last_reclaim_ns_.load(std::memory_order_relaxed) > kHeartbeatReclaimNs) {
    (void)OnLedger([&] { MaybeReclaim(true); });
  }
}

void LedgerBudget::PublishActivity(const PoolActivity& activity) {
  if (Forked()) return;
  std::shared_lock lock(slot_mu_);
  // Guarded like every access to the mapping: the file may have been truncated under it (this
  // one, unguarded, killed a GPU engine with SIGBUS after `truncate -s 0` of its segment).
  (void)OnLedger([&] {
    if (!Owns()) return;  // lost: the next heartbeat re-attaches, then we publish
    LedgerSlot& s = Slot();
    Atomic(s.pages_mapped).store(activity.pages_mapped, std::memory_order_relaxed);
    Atomic(s.pages_unmapped).store(activity.pages_unmapped, std::memory_order_relaxed);
    Atomic(s.sync_maps).store(activity.sync_maps, std::memory_order_relaxed);
    Atomic(s.budget_refusals).store(activity.budget_refusals, std::memory_order_relaxed);
  });
}

void LedgerBudget::Reattach() {
  // Exclusive: no charge, release or move runs meanwhile, so the holdings copied below are
  // exactly those of this process, and no thread still writes the old slot afterwards.
  std::unique_lock lock(slot_mu_);
  bool still_ours = false;
  if (!OnLedger(
          [&] { still_ours = !lost_.load() && LoadRelaxed(Slot().owner) == owner_word_.load(); }) ||
      still_ours) {
    return;
  }
  lost_.store(true);
  if (auto problem = segment_->Health()) {
    Degrade(*problem);
    return;
  }
  std::string label;
  {
    std::lock_guard<std::mutex> label_lock(label_mu_);
    label = label_;
  }
  // Our slot was reclaimed by a process in another pid namespace that saw our heartbeat stop.
  // Take a new one and re-register what we hold (we still hold it on the device) through the
  // admission protocol: tentative first, then the sum, so that any admission racing with us sees
  // our bytes, and we see whether the budget is now over-committed.
  Result<std::uint32_t> slot = Status(Errc::kInvalid, "");
  LedgerSums sums;
  const std::uint64_t held = charged_.load();
  const bool ran = OnLedger([&] {
    slot = ClaimSlot(*segment_, me_, label);
    if (!slot.ok()) return;
    LedgerSlot& s = segment_->slot(slot.value());
    Atomic(s.limit).store(limit_seen_.load());  // the operator's limit and share survive
    Atomic(s.share_weight).store(share_weight_seen_.load());
    Atomic(s.share_min).store(share_min_seen_.load());
    Atomic(s.share_unit).store(PublishedUnit());
    Atomic(s.tentative).fetch_add(held);  // (W)
    sums = SumSlots(*segment_);           // (R)
    Atomic(s.charged).fetch_add(held);    // (C)
    Atomic(s.tentative).fetch_sub(held);  // (T)
    Atomic(s.in_use).store(in_use_.load());
    Atomic(s.other).store(other_.load());
    Atomic(s.peak).store(held);
    PublishEngineSteps(s);
  });
  if (!ran) return;
  if (!slot.ok()) {
    log::ErrorOnce("ledger-lost", fmt::format("kvcached: this process lost its slot in {} and "
                                              "cannot take a new one ({}); it takes no new pages",
                                              segment_->path(), slot.status().message()));
    return;
  }
  slot_.store(slot.value());
  lost_.store(false);
  KVC_LOG_WARN(
      "kvcached: ledger slot in {} was reclaimed while this process was stalled; "
      "re-registered its {} bytes in slot {}",
      segment_->path(), held, slot.value());
  if (sums.claimed > segment_->budget()) {
    // Others were admitted our share while we were presumed dead: the GPU holds more than the
    // budget until someone gives memory back. Ask them to; we take no page until it fits.
    KVC_LOG_WARN(
        "kvcached: {} is over its budget by {} bytes after re-registering; asking the "
        "other engines to give back reserved memory",
        segment_->path(), sums.claimed - segment_->budget());
    (void)OnLedger([&] {
      SegmentHeader& h = segment_->header();
      Atomic(h.pressure_bytes)
          .store(std::min(sums.claimed - segment_->budget(), segment_->gpu_total()),
                 std::memory_order_relaxed);
      Atomic(h.pressure_pid).store(me_.pid, std::memory_order_relaxed);
      Atomic(h.pressure_ns).store(BoottimeNs(), std::memory_order_relaxed);
      Atomic(h.pressure_seq).fetch_add(1);
    });
  }
}

void LedgerBudget::SetLabel(const std::string& label) {
  {
    std::lock_guard<std::mutex> label_lock(label_mu_);
    label_ = label;
  }
  std::shared_lock lock(slot_mu_);
  (void)OnLedger([&] {
    if (Owns()) WriteLabel(Slot(), label);
  });
}

void LedgerBudget::NoteRefused(std::uint64_t bytes) {
  if (Forked()) return;
  std::shared_lock lock(slot_mu_);
  (void)OnLedger([&] {
    if (!Owns()) return;
    // Refused by its own limit (kvctl limit): no engine giving would help it.
    if (SatAdd(Load(Slot().charged), bytes) > EffectiveLimit()) return;
    // If it is below its fair share, the engines above theirs must give.
    starved_.store(
        RecordRefusal(*segment_, slot_.load(std::memory_order_relaxed),
                      share_granule_.load(std::memory_order_relaxed), BoottimeNs(), bytes),
        std::memory_order_relaxed);
  });
}

void LedgerBudget::NoteServed() {
  if (!starved_.load(std::memory_order_relaxed) || Forked()) return;
  starved_.store(false, std::memory_order_relaxed);
  std::shared_lock lock(slot_mu_);
  (void)OnLedger([&] {
    if (Owns()) RecordServed(*segment_, slot_.load(std::memory_order_relaxed), BoottimeNs());
  });
}

std::uint64_t LedgerBudget::PublishedUnit() const {
  const std::uint64_t unit = share_unit_.load(std::memory_order_relaxed);
  return std::min(unit != 0 ? unit : share_granule_.load(std::memory_order_relaxed),
                  segment_->budget());
}

Status LedgerBudget::SetShareUnit(std::uint64_t bytes) {
  if (bytes > segment_->budget()) {
    return {Errc::kInvalid,
            fmt::format("a share unit of {} bytes exceeds the GPU budget ({} bytes): the "
                        "engine could never take one; give the bytes of its smallest "
                        "allocation (pages per unit x page size)",
                        bytes, segment_->budget())};
  }
  share_unit_.store(bytes);
  std::shared_lock lock(slot_mu_);
  Status status = Status::Ok();
  (void)OnLedger([&] {
    if (Owns())
      status = SetSlotShareUnit(*segment_, slot_.load(), owner_word_.load(), PublishedUnit());
  });
  return status;
}

void LedgerBudget::ConfigureShare(std::uint64_t weight_milli, std::uint64_t min_bytes,
                                  std::uint64_t granule, std::uint64_t preempt_after_ns) {
  share_granule_.store(std::max<std::uint64_t>(granule, 1));
  preempt_after_ns_.store(preempt_after_ns);
  std::shared_lock lock(slot_mu_);
  (void)OnLedger([&] {
    if (!Owns()) return;
    (void)SetSlotShareUnit(*segment_, slot_.load(), owner_word_.load(), PublishedUnit());
    auto stored =
        SetSlotShare(*segment_, slot_.load(), owner_word_.load(), weight_milli, min_bytes);
    if (!stored.ok()) return;
    share_weight_seen_.store(stored.value().weight_milli);
    share_min_seen_.store(stored.value().min_bytes);
  });
}

ShareVerdict LedgerBudget::Share() const {
  if (Forked()) return {};
  std::shared_lock lock(slot_mu_);
  ShareVerdict v;
  (void)OnLedger([&] {
    if (!Owns()) return;
    const LedgerSlot& s = Slot();
    // Remembered for a re-registration (kvctl share may have changed them).
    share_weight_seen_.store(LoadRelaxed(s.share_weight), std::memory_order_relaxed);
    share_min_seen_.store(LoadRelaxed(s.share_min), std::memory_order_relaxed);
    v = VerdictFor(*segment_, slot_.load(), share_granule_.load(std::memory_order_relaxed),
                   BoottimeNs(), preempt_after_ns_.load(std::memory_order_relaxed));
  });
  return v;
}

ShareAction LedgerBudget::ShareActionNow() const {
  if (Forked()) return ShareAction::kOk;
  bool starved = false;
  {
    std::shared_lock lock(slot_mu_);
    (void)OnLedger([&] {
      if (Owns()) starved = OthersStarved(*segment_, slot_.load(), BoottimeNs());
    });
  }
  // Nobody else starved: kOk without the arithmetic (OthersStarved says why).
  return starved ? Share().action : ShareAction::kOk;
}

void LedgerBudget::ReportShare(std::uint64_t bytes, std::uint64_t requests) {
  std::shared_lock lock(slot_mu_);
  (void)OnLedger([&] {
    if (!Owns()) return;
    LedgerSlot& s = Slot();
    Atomic(s.share_given)
        .store(SatAdd(LoadRelaxed(s.share_given), bytes), std::memory_order_relaxed);
    Atomic(s.share_preempted)
        .store(SatAdd(LoadRelaxed(s.share_preempted), requests), std::memory_order_relaxed);
  });
}

void LedgerBudget::ReportEngineSteps(const EngineSteps& totals) {
  engine_steps_.store(totals.steps, std::memory_order_relaxed);
  engine_hook_ns_.store(totals.hook_ns, std::memory_order_relaxed);
  engine_hook_c_calls_.store(totals.c_calls, std::memory_order_relaxed);
  std::shared_lock lock(slot_mu_);
  (void)OnLedger([&] {
    if (!Owns()) return;  // a fork child, or lost: Reattach publishes the totals kept above
    PublishEngineSteps(Slot());
  });
}

void LedgerBudget::PublishEngineSteps(LedgerSlot& s) const {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  Atomic(s.engine_steps).store(engine_steps_.load(kRelaxed), kRelaxed);
  Atomic(s.engine_hook_ns).store(engine_hook_ns_.load(kRelaxed), kRelaxed);
  Atomic(s.engine_hook_c_calls).store(engine_hook_c_calls_.load(kRelaxed), kRelaxed);
}

BudgetView LedgerBudget::View() const {
  BudgetView v;
  v.budget = segment_->budget();
  v.in_use = in_use_.load(std::memory_order_relaxed);
  const std::uint64_t charged = charged_.load(std::memory_order_relaxed);
  v.reserved = charged > v.in_use ? charged - v.in_use : 0;
  v.others = other_.load(std::memory_order_relaxed);
  v.peak = peak_.load(std::memory_order_relaxed);
  std::shared_lock lock(slot_mu_);
  const bool shared = OnLedger([&] {
    v.limit = EffectiveLimit();
    v.peak = std::max(v.peak, LoadRelaxed(Slot().peak));
    v.all_charged = SumSlots(*segment_).charged;
  });
  if (!shared) {
    v.limit = local_limit_.load();
    v.all_charged = charged;
  }
  return v;
}

}  // namespace kvcached::ledger
