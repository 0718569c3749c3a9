// The sharing policy end to end on the real ledger, with simulated engines (docs/sharing.md).
// Each engine is a LedgerBudget of its own slot, stepped in turn like an engine's scheduler: it
// reads its verdict, finishes requests above its demand (their blocks stay cached), and then
// admits (ok), waits (stop_admitting), frees cached blocks (give_cached) or preempts its newest
// running requests (preempt). Real clocks: the preemption bound is a few milliseconds here and
// each step sleeps 1 ms, so bounds in steps hold however slowly the machine runs.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/budget/fair_share.h"
#include "core/ledger/ledger_budget.h"
#include "core/ledger/ledger_segment.h"
#include "tests/ledger/test_util.h"

namespace kvcached::ledger {
namespace {

using testing::ScopedSegmentName;

constexpr std::uint64_t kPage = 2ULL << 20U;
constexpr std::uint64_t kBudgetPages = 64;
constexpr std::uint64_t kPreemptNs = 5ULL * 1000 * 1000;

class SimEngine {
 public:
  SimEngine(std::shared_ptr<Segment> seg, const std::string& label, double weight) {
    auto b = LedgerBudget::Attach(std::move(seg), label);
    EXPECT_TRUE(b.ok()) << b.status().message();
    budget_ = std::move(b).value();
    budget_->ConfigureShare(static_cast<std::uint64_t>(weight * 1000), 0, kPage, kPreemptNs);
  }

  // One scheduler step with `demand` pages wanted by running requests. `reference_share` (pages,
  // 0 = none) is the share the test expects under overload: an engine below it must never be
  // asked to give.
  void Step(std::uint64_t demand, std::uint64_t reference_share = 0) {
    const ShareVerdict v = budget_->Share();
    last_ = v;
    if (v.give_bytes > 0) {
      ++asked_;
      if (held() * kPage <= v.fair_share) ++asked_at_or_below_own_share_;
      if (reference_share != 0 && held() + 1 < reference_share) ++asked_below_reference_;
    }
    if (running_ > demand) {  // finished requests: their blocks stay cached
      cached_ += running_ - demand;
      running_ = demand;
    }
    const std::uint64_t give = (v.give_bytes + kPage - 1) / kPage;
    switch (v.action) {
      case ShareAction::kOk:
        Admit(demand);
        break;
      case ShareAction::kStopAdmitting:
        break;
      case ShareAction::kGiveCached: {
        const std::uint64_t freed = FreeCached(give);
        given_ += freed;
        budget_->ReportShare(freed * kPage, 0);
        break;
      }
      case ShareAction::kPreempt: {
        const std::uint64_t from_cache = FreeCached(give);
        const std::uint64_t preempt = std::min(give - from_cache, running_);
        running_ -= preempt;  // recomputed later: the demand stays
        Release(preempt);
        preempted_ += preempt;
        given_ += from_cache + preempt;
        budget_->ReportShare((from_cache + preempt) * kPage, preempt);
        break;
      }
    }
  }

  [[nodiscard]] std::uint64_t held() const { return running_ + cached_; }
  [[nodiscard]] std::uint64_t preempted() const { return preempted_; }
  [[nodiscard]] std::uint64_t given() const { return given_; }
  [[nodiscard]] std::uint64_t asked() const { return asked_; }
  [[nodiscard]] std::uint64_t asked_at_or_below_own_share() const {
    return asked_at_or_below_own_share_;
  }
  [[nodiscard]] std::uint64_t asked_below_reference() const { return asked_below_reference_; }
  [[nodiscard]] bool refused() const { return refused_; }

 private:
  // As an engine's step: what it still needs, asked for (and noted when refused) as a whole,
  // as the page pool notes a refused request; a request met in full is noted as served.
  void Admit(std::uint64_t demand) {
    refused_ = false;
    const bool asked = running_ < demand;
    while (running_ < demand) {
      if (cached_ > 0) {  // evict a cached block for a new one
        --cached_;
        ++running_;
      } else if (budget_->TryCharge(kPage)) {
        budget_->MoveToInUse(kPage);
        ++running_;
      } else {
        budget_->NoteRefused((demand - running_) * kPage);
        refused_ = true;
        return;
      }
    }
    if (asked) budget_->NoteServed();
  }
  std::uint64_t FreeCached(std::uint64_t pages) {
    const std::uint64_t n = std::min(pages, cached_);
    cached_ -= n;
    Release(n);
    return n;
  }
  void Release(std::uint64_t pages) {
    budget_->MoveToReserved(pages * kPage);
    budget_->Uncharge(pages * kPage);
  }

  std::unique_ptr<LedgerBudget> budget_;
  std::uint64_t running_ = 0;
  std::uint64_t cached_ = 0;
  std::uint64_t preempted_ = 0;
  std::uint64_t given_ = 0;
  std::uint64_t asked_ = 0;
  std::uint64_t asked_at_or_below_own_share_ = 0;
  std::uint64_t asked_below_reference_ = 0;
  bool refused_ = false;
  ShareVerdict last_;
};

void Pause() {
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

std::uint64_t Distance(std::uint64_t a, std::uint64_t b) {
  return a > b ? a - b : b - a;
}

class ShareSimulation : public ::testing::Test {
 protected:
  std::shared_ptr<Segment> MakeSegment() {
    CreateParams p;
    p.gpu_total = 2 * kBudgetPages * kPage;
    p.budget = kBudgetPages * kPage;
    p.gpu_uuid = "GPU-share-sim";
    auto seg = Segment::OpenOrCreate(name_.name(), p);
    EXPECT_TRUE(seg.ok()) << seg.status().message();
    return std::shared_ptr<Segment>(std::move(seg).value());
  }
  ScopedSegmentName name_{"share_sim"};
};

TEST_F(ShareSimulation, BusyEngineHandsHalfToTheNewcomerWithinABoundedNumberOfSteps) {
  auto seg = MakeSegment();
  SimEngine a(seg, "a", 1);
  SimEngine b(seg, "b", 1);
  for (int step = 0; step < 20; ++step) {  // A alone, busy: takes everything
    a.Step(kBudgetPages);
    b.Step(0);
    Pause();
  }
  ASSERT_EQ(a.held(), kBudgetPages);
  int first_refusal = -1;
  int handed_over = -1;
  const auto start = std::chrono::steady_clock::now();
  double handover_ms = 0;
  for (int step = 0; step < 80; ++step) {  // B arrives, as busy
    a.Step(kBudgetPages, kBudgetPages / 2);
    b.Step(kBudgetPages, kBudgetPages / 2);
    if (b.refused() && first_refusal < 0) first_refusal = step;
    if (handed_over < 0 && b.held() + 1 >= kBudgetPages / 2) {
      handed_over = step;
      handover_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
    }
    Pause();
  }
  ASSERT_EQ(first_refusal, 0);
  ASSERT_GE(handed_over, 0) << "B never got its share (holds " << b.held() << ")";
  // The bound is 5 ms and each step takes at least 1 ms: preemption by step 6, pages next step.
  EXPECT_LE(handed_over, 8) << "steps from B's first refusal to its share";
  EXPECT_GT(a.preempted(), 0U) << "A had no cached blocks: only preemption could free pages";
  EXPECT_LE(Distance(a.held(), kBudgetPages / 2), 1U);
  EXPECT_LE(Distance(b.held(), kBudgetPages / 2), 1U);
  EXPECT_EQ(a.asked_at_or_below_own_share() + b.asked_at_or_below_own_share(), 0U);
  EXPECT_EQ(a.asked_below_reference() + b.asked_below_reference(), 0U);
  EXPECT_EQ(b.asked(), 0U) << "the starved engine was asked to give";
  std::printf("[ handover ] %d steps, %.1f ms from first refusal (bound %llu ms)\n", handed_over,
              handover_ms, static_cast<unsigned long long>(kPreemptNs / 1000000));
}

// Symmetric overload with weights: every engine converges to within one page of its weighted
// share and stays there.
void ExpectConvergence(ShareSimulation& /*fixture*/, std::shared_ptr<Segment> seg,
                       const std::vector<double>& weights) {
  std::vector<std::unique_ptr<SimEngine>> engines;
  double weight_sum = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    engines.push_back(std::make_unique<SimEngine>(seg, "e" + std::to_string(i), weights[i]));
    weight_sum += weights[i];
  }
  std::vector<std::uint64_t> share;
  for (double w : weights) {
    share.push_back(static_cast<std::uint64_t>(double(kBudgetPages) * w / weight_sum));
  }
  int converged_at = -1;
  for (int step = 0; step < 120; ++step) {
    for (std::size_t i = 0; i < engines.size(); ++i) engines[i]->Step(kBudgetPages, share[i]);
    bool all = true;
    for (std::size_t i = 0; i < engines.size(); ++i) {
      all = all && Distance(engines[i]->held(), share[i]) <= 1;
    }
    if (all && converged_at < 0) converged_at = step;
    if (!all && converged_at >= 0 && step > converged_at + 1) {
      ADD_FAILURE() << "left its share at step " << step << " after converging at " << converged_at;
      converged_at = -1;
    }
    Pause();
  }
  ASSERT_GE(converged_at, 0);
  EXPECT_LE(converged_at, 30) << "steps to converge";
  for (std::size_t i = 0; i < engines.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "engine " << i << " weight " << weights[i]);
    EXPECT_LE(Distance(engines[i]->held(), share[i]), 1U) << engines[i]->held();
    EXPECT_EQ(engines[i]->asked_at_or_below_own_share(), 0U);
    EXPECT_EQ(engines[i]->asked_below_reference(), 0U);
  }
}

TEST_F(ShareSimulation, SymmetricOverloadConvergesToEqualHalves) {
  ExpectConvergence(*this, MakeSegment(), {1, 1});
}

TEST_F(ShareSimulation, SymmetricOverloadConvergesToWeightedShares) {
  ExpectConvergence(*this, MakeSegment(), {3, 1});
}

TEST_F(ShareSimulation, ThreeEnginesConvergeToWeightedShares) {
  ExpectConvergence(*this, MakeSegment(), {1, 1, 2});
}

TEST_F(ShareSimulation, AlternatingBurstsMoveCachedPagesWithoutPreempting) {
  auto seg = MakeSegment();
  SimEngine a(seg, "a", 1);
  SimEngine b(seg, "b", 1);
  for (int step = 0; step < 20; ++step) {  // A bursts, B idle
    a.Step(kBudgetPages);
    b.Step(0);
    Pause();
  }
  ASSERT_EQ(a.held(), kBudgetPages);
  int b_served = -1;
  for (int step = 0; step < 40; ++step) {  // A idle (its blocks stay cached), B bursts
    a.Step(0);
    b.Step(kBudgetPages);
    if (b_served < 0 && b.held() + 1 >= kBudgetPages / 2) b_served = step;
    Pause();
  }
  ASSERT_GE(b_served, 0);
  EXPECT_LE(b_served, 3) << "cached blocks are given at once, no bound to wait for";
  EXPECT_EQ(a.preempted(), 0U) << "cached blocks were enough: nothing to preempt";
  EXPECT_LE(Distance(b.held(), kBudgetPages / 2), 1U);
  int a_back = -1;
  for (int step = 0; step < 40; ++step) {  // A bursts again, B keeps going
    a.Step(kBudgetPages);
    b.Step(kBudgetPages);
    if (a_back < 0 && a.held() + 1 >= kBudgetPages / 2 && b.held() + 1 >= kBudgetPages / 2) {
      a_back = step;
    }
    Pause();
  }
  EXPECT_GE(a_back, 0);
  EXPECT_LE(Distance(a.held(), kBudgetPages / 2), 1U);
  EXPECT_LE(Distance(b.held(), kBudgetPages / 2), 1U);
  EXPECT_EQ(a.asked_at_or_below_own_share() + b.asked_at_or_below_own_share(), 0U);
}

TEST_F(ShareSimulation, AQuietNeighbourIsGivenWhatItAsksForNotHalfTheBudget) {
  // A busy with the whole budget; B quiet: one more page every 25 steps (one request at a
  // time). A gives about what B asks for, not B's deficit of half the budget each time, and
  // stops giving once B has it (not after the ledger's freshness window).
  auto seg = MakeSegment();
  SimEngine a(seg, "a", 1);
  SimEngine b(seg, "b", 1);
  for (int step = 0; step < 20; ++step) {
    a.Step(kBudgetPages);
    b.Step(0);
    Pause();
  }
  ASSERT_EQ(a.held(), kBudgetPages);
  std::uint64_t b_demand = 0;
  for (int step = 0; step < 250; ++step) {
    if (step % 25 == 0) ++b_demand;
    a.Step(kBudgetPages);
    b.Step(b_demand);
    Pause();
  }
  EXPECT_EQ(b.held(), b_demand) << "B got every page it asked for";
  EXPECT_LE(a.given(), b_demand + 2) << "A gave more than B asked for";
  EXPECT_LE(a.preempted(), b_demand + 2);
  EXPECT_EQ(a.held() + b.held(), kBudgetPages);
}

TEST_F(ShareSimulation, WithoutContentionNobodyIsAskedAnything) {
  auto seg = MakeSegment();
  SimEngine a(seg, "a", 1);
  SimEngine b(seg, "b", 5);
  for (int step = 0; step < 30; ++step) {
    a.Step(kBudgetPages / 2 - 2);
    b.Step(step % 2 == 0 ? 10 : 20);
    Pause();
  }
  EXPECT_EQ(a.asked() + b.asked(), 0U);
  EXPECT_EQ(a.held(), kBudgetPages / 2 - 2);
}

}  // namespace
}  // namespace kvcached::ledger
