// What the sharing policy costs an engine per step (docs/sharing.md): LedgerBudget::Share() (what
// kvcached_share_verdict runs), ShareActionNow() (kvcached_share_action_get, what the vLLM hook
// asks every step) while nobody is starved, and a refused KV page request (TryCharge, then
// NoteRefused, which records the starvation episode, as the page pool does), on the real ledger in
// /dev/shm with 2, 8 and 63 engines attached (this process holds every slot). No driver, no GPU.
// Usage: share_verdict_cost [calls per setting, default 20000]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_segment.h"

namespace {

using kvcached::ledger::CreateParams;
using kvcached::ledger::LedgerBudget;
using kvcached::ledger::Segment;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kPage = 2ULL << 20U;

double Us(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

int Run(int engines, int calls) {
  const std::string name = "kvcached_bench_share_" + std::to_string(::getpid());
  CreateParams p;
  p.gpu_total = 4096 * kPage;
  p.budget = 2048 * kPage;
  p.gpu_uuid = "GPU-bench-share";
  auto seg = Segment::OpenOrCreate(name, p);
  if (!seg.ok()) {
    std::fprintf(stderr, "share_verdict_cost: %s\n", seg.status().message().c_str());
    return 1;
  }
  std::shared_ptr<Segment> shared(std::move(seg).value());
  std::vector<std::unique_ptr<LedgerBudget>> budgets;
  for (int i = 0; i < engines; ++i) {
    auto b = LedgerBudget::Attach(shared, "bench-" + std::to_string(i));
    if (!b.ok()) {
      std::fprintf(stderr, "share_verdict_cost: %s\n", b.status().message().c_str());
      (void)Segment::Remove(name);
      return 1;
    }
    budgets.push_back(std::move(b).value());
    budgets.back()->ConfigureShare(1000 + 500 * (i % 3), 0, kPage, 500ULL * 1000 * 1000);
  }
  // Nobody starved yet (an engine's usual step): the full verdict against the action alone
  // (kvcached_share_action_get), both `ok`.
  std::vector<double> ok_verdict_us;
  std::vector<double> ok_action_us;
  ok_verdict_us.reserve(calls);
  ok_action_us.reserve(calls);
  for (int i = 0; i < calls; ++i) {
    const auto t0 = Clock::now();
    const kvcached::ShareVerdict v = budgets[0]->Share();
    const auto t1 = Clock::now();
    const kvcached::ShareAction a = budgets[0]->ShareActionNow();
    const auto t2 = Clock::now();
    if (v.action != kvcached::ShareAction::kOk || a != kvcached::ShareAction::kOk) {
      std::fprintf(stderr, "share_verdict_cost: not ok with nobody starved\n");
      budgets.clear();
      (void)Segment::Remove(name);
      return 1;
    }
    ok_verdict_us.push_back(Us(t0, t1));
    ok_action_us.push_back(Us(t1, t2));
  }
  // Engine 0 takes the whole budget; the last one is refused (starved): the verdict is not `ok`.
  while (budgets[0]->TryCharge(kPage)) budgets[0]->MoveToInUse(kPage);
  std::vector<double> verdict_us;
  std::vector<double> refusal_us;
  verdict_us.reserve(calls);
  refusal_us.reserve(calls);
  for (int i = 0; i < calls; ++i) {
    const auto t0 = Clock::now();
    const bool got = budgets.back()->TryCharge(kPage);
    if (!got) budgets.back()->NoteRefused(kPage);
    const auto t1 = Clock::now();
    const kvcached::ShareVerdict v = budgets[0]->Share();
    const auto t2 = Clock::now();
    if (got || v.action == kvcached::ShareAction::kOk) {
      std::fprintf(stderr, "share_verdict_cost: unexpected state (admitted %d, action %d)\n",
                   static_cast<int>(got), static_cast<int>(v.action));
      budgets.clear();
      (void)Segment::Remove(name);
      return 1;
    }
    refusal_us.push_back(Us(t0, t1));
    verdict_us.push_back(Us(t1, t2));
  }
  std::printf(
      "{\"bench\":\"share_verdict_cost\",\"engines\":%d,\"calls\":%d,\"ok_verdict_us_p50\":%.2f,"
      "\"ok_action_us_p50\":%.2f,\"ok_action_us_p99\":%.2f,\"verdict_us_p50\":%.2f,"
      "\"verdict_us_p99\":%.2f,\"refused_charge_us_p50\":%.2f,\"refused_charge_us_p99\":%.2f}\n",
      engines, calls, kvcached::bench::Median(ok_verdict_us), kvcached::bench::Median(ok_action_us),
      kvcached::bench::Percentile(ok_action_us, 99), kvcached::bench::Median(verdict_us),
      kvcached::bench::Percentile(verdict_us, 99), kvcached::bench::Median(refusal_us),
      kvcached::bench::Percentile(refusal_us, 99));
  budgets.clear();
  (void)Segment::Remove(name);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const int calls = argc > 1 ? std::max(1, std::atoi(argv[1])) : 20000;
  for (int engines : {2, 8, 63}) {
    if (const int rc = Run(engines, calls); rc != 0) return rc;
  }
  return 0;
}
