// The sharing policy's arithmetic (core/budget/fair_share.h): weighted max-min shares with
// minimums and donation, rounding to pages, and the verdict each engine gets. Pure functions: the
// expected numbers are worked out by hand, and random cases are checked against the properties
// that define a weighted max-min allocation (not against a second copy of the algorithm).
#include "core/budget/fair_share.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

namespace kvcached {
namespace {

constexpr std::uint64_t kPage = 2ULL << 20U;
constexpr std::uint64_t kNow = 1'000'000'000'000ULL;  // an arbitrary CLOCK_BOOTTIME
constexpr std::uint64_t kMs = 1'000'000ULL;

// A starved engine (refused just now) holding `held_pages`.
ShareInput Starved(std::uint64_t held_pages, double weight = 1.0, std::uint64_t min_pages = 0,
                   std::uint64_t since = kNow) {
  return {static_cast<std::uint64_t>(weight * 1000), min_pages * kPage, held_pages * kPage, 0,
          since};
}
// An engine that gets what it asks for, holding `held_pages`.
ShareInput Content(std::uint64_t held_pages, double weight = 1.0, std::uint64_t min_pages = 0) {
  return {static_cast<std::uint64_t>(weight * 1000), min_pages * kPage, held_pages * kPage, 0, 0};
}

std::vector<std::uint64_t> Pages(const std::vector<ShareInput>& e, std::uint64_t budget_pages) {
  std::vector<std::uint64_t> shares = FairShares(e, budget_pages * kPage, kPage);
  for (auto& s : shares) {
    EXPECT_EQ(s % kPage, 0U) << "shares are whole pages";
    s /= kPage;
  }
  return shares;
}

using P = std::vector<std::uint64_t>;

TEST(FairShares, EqualWeightsUnderSymmetricOverloadSplitTheBudgetEvenly) {
  EXPECT_EQ(Pages({Starved(90), Starved(10)}, 100), (P{50, 50}));
  EXPECT_EQ(Pages({Starved(0), Starved(0), Starved(0), Starved(0)}, 100), (P{25, 25, 25, 25}));
}

TEST(FairShares, SharesAreProportionalToWeights) {
  EXPECT_EQ(Pages({Starved(0, 3), Starved(0, 1)}, 100), (P{75, 25}));
  EXPECT_EQ(Pages({Starved(0, 1), Starved(0, 1), Starved(0, 2)}, 100), (P{25, 25, 50}));
  EXPECT_EQ(Pages({Starved(0, 0.5), Starved(0, 1.5)}, 100), (P{25, 75}));
}

TEST(FairShares, AnEngineUsingLessThanItsShareDonatesTheRest) {
  // B holds 10 pages and asks for nothing more: A may have the other 90.
  EXPECT_EQ(Pages({Starved(50), Content(10)}, 100), (P{90, 10}));
  // Three engines, one idle: the two busy ones split what the idle one leaves, by weight.
  EXPECT_EQ(Pages({Starved(0, 2), Starved(0, 1), Content(10)}, 100), (P{60, 30, 10}));
}

TEST(FairShares, GuaranteedMinimumComesBeforeWeights) {
  EXPECT_EQ(Pages({Starved(0), Starved(0, 1, 70)}, 100), (P{30, 70}));
  // A minimum below the weighted share changes nothing.
  EXPECT_EQ(Pages({Starved(0), Starved(0, 1, 20)}, 100), (P{50, 50}));
}

TEST(FairShares, MinimumIsOnlyKeptWhileTheEngineUsesIt) {
  // B is promised 70 pages but holds 10 and asks for no more: the rest goes to A meanwhile.
  EXPECT_EQ(Pages({Starved(90), Content(10, 1, 70)}, 100), (P{90, 10}));
}

TEST(FairShares, MinimumsThatDoNotFitAreCutInProportion) {
  EXPECT_EQ(Pages({Starved(0, 1, 80), Starved(0, 1, 80)}, 100), (P{50, 50}));
  // 100 (120 cut to what it can want) and 40: 71.4 and 28.6 pages, the odd page to the larger
  // remainder.
  EXPECT_EQ(Pages({Starved(0, 1, 120), Starved(0, 1, 40)}, 100), (P{71, 29}));
}

TEST(FairShares, OneEngineMayHaveTheWholeBudget) {
  EXPECT_EQ(Pages({Starved(3)}, 100), (P{100}));
  EXPECT_EQ(Pages({Content(30)}, 100), (P{30}));
}

TEST(FairShares, WithoutContentionEveryEngineKeepsWhatItHolds) {
  EXPECT_EQ(Pages({Content(30), Content(20), Content(0)}, 100), (P{30, 20, 0}));
  EXPECT_TRUE(FairShares({}, 100 * kPage, kPage).empty());
  EXPECT_EQ(FairShares(std::vector<ShareInput>{Starved(0)}, 0, kPage), (P{0}));
}

TEST(FairShares, RoundingToPagesStaysWithinOnePageAndWithinTheBudget) {
  // 101.5 pages among three equal engines: 33.83 each exactly.
  const std::vector<ShareInput> e = {Starved(0), Starved(0), Starved(0)};
  const auto shares = FairShares(e, 101 * kPage + kPage / 2, kPage);
  std::uint64_t sum = 0;
  for (std::uint64_t s : shares) {
    EXPECT_EQ(s % kPage, 0U);
    EXPECT_GE(s, 33 * kPage);
    EXPECT_LE(s, 34 * kPage);
    sum += s;
  }
  EXPECT_EQ(sum, 101 * kPage) << "every whole page of the budget is someone's";
}

TEST(FairShares, ZeroWeightReadsAsTheDefaultWeight) {
  ShareInput unset = Starved(0);
  unset.weight_milli = 0;
  EXPECT_EQ(Pages({unset, Starved(0)}, 100), (P{50, 50}));
}

// The properties that define weighted max-min with minimums, on random inputs.
TEST(FairShares, RandomCasesAreWeightedMaxMinFair) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 3000; ++round) {
    const std::uint64_t budget_pages = 1 + rng() % 400;
    const std::size_t n = 1 + rng() % 6;
    std::vector<ShareInput> e;
    for (std::size_t i = 0; i < n; ++i) {
      ShareInput in;
      in.weight_milli = 1 + rng() % 5000;
      in.min_bytes = (rng() % 3 == 0) ? (rng() % (budget_pages / 2 + 1)) * kPage : 0;
      in.held = (rng() % (budget_pages + 1)) * kPage;
      in.starved_since_ns = rng() % 2 == 0 ? kNow : 0;
      e.push_back(in);
    }
    const std::uint64_t budget = budget_pages * kPage;
    const auto a = FairShares(e, budget, kPage);
    std::vector<double> demand(n), min(n);
    double demand_sum = 0, min_sum = 0, sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      demand[i] = e[i].starved_since_ns != 0 ? double(budget) : double(std::min(e[i].held, budget));
      min[i] = std::min(double(e[i].min_bytes), demand[i]);
      demand_sum += demand[i];
      min_sum += min[i];
      sum += double(a[i]);
    }
    const double scale = min_sum > double(budget) ? double(budget) / min_sum : 1.0;
    const double g = double(kPage);
    SCOPED_TRACE(::testing::Message() << "round " << round);
    ASSERT_LE(sum, double(budget));
    if (demand_sum >= double(budget)) {
      EXPECT_GE(sum + double(n) * g, double(budget)) << "work conserving";
    }
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_LE(double(a[i]), demand[i] + g) << "more than it wants";
      EXPECT_GE(double(a[i]) + g, min[i] * scale) << "minimum not honoured";
      // Nobody unsatisfied may get less per weight than another engine gets beyond its minimum.
      if (double(a[i]) + g >= demand[i]) continue;
      for (std::size_t j = 0; j < n; ++j) {
        if (double(a[j]) <= min[j] * scale + g) continue;
        // Up to a page each way for rounding, a byte for the level's integer steps.
        const double per_i = (double(a[i]) + g) / double(e[i].weight_milli);
        const double per_j = (double(a[j]) - g) / double(e[j].weight_milli);
        EXPECT_GE(per_i + 1.0, per_j) << "engine " << i << " is short while " << j << " gets more";
      }
    }
  }
}

// ---- verdicts ----

TEST(ShareVerdicts, AnEngineAtOrBelowItsShareIsNeverAskedToGive) {
  // A holds 50 of 100, B 50 and starved: A is at its share.
  ShareVerdict v = DecideShare(std::vector<ShareInput>{Content(50), Starved(50)}, 0, 100 * kPage,
                               kPage, kNow, 500 * kMs);
  EXPECT_EQ(v.action, ShareAction::kOk);
  EXPECT_EQ(v.give_bytes, 0U);
  // Random: whoever is asked to give holds more than its share.
  std::mt19937_64 rng(11);
  for (int round = 0; round < 3000; ++round) {
    const std::size_t n = 1 + rng() % 5;
    std::vector<ShareInput> e;
    std::uint64_t left = 200;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t held = rng() % (left + 1);
      left -= held;
      e.push_back(rng() % 2 ? Starved(held, 0.5 + double(rng() % 4)) : Content(held));
    }
    for (std::size_t i = 0; i < n; ++i) {
      std::vector<ShareInput> asking = e;  // judged as if it asked for more
      if (asking[i].starved_since_ns == 0) asking[i].starved_since_ns = kNow;
      const auto shares = FairShares(asking, 200 * kPage, kPage);
      v = DecideShare(e, i, 200 * kPage, kPage, kNow + 10 * kMs, 500 * kMs);
      EXPECT_EQ(v.fair_share, shares[i]);
      if (e[i].held < shares[i]) {
        EXPECT_EQ(v.action, ShareAction::kOk) << "round " << round;
        EXPECT_EQ(v.give_bytes, 0U);
      } else if (e[i].held == shares[i]) {
        EXPECT_EQ(v.give_bytes, 0U) << "round " << round;
        EXPECT_LE(v.action, ShareAction::kStopAdmitting);
      } else if (v.action != ShareAction::kOk) {
        EXPECT_LE(v.give_bytes, e[i].held - shares[i]) << "asked below its share";
      }
    }
  }
}

TEST(ShareVerdicts, AboveShareWhileAnotherIsStarvedGivesTheSmallerOfExcessAndDeficit) {
  // A 80 (content), B 10 (starved), C 10 (content); B and A each get 45: A gives 35.
  const std::vector<ShareInput> e = {Content(80), Starved(10), Content(10)};
  const ShareVerdict v = DecideShare(e, 0, 100 * kPage, kPage, kNow, 500 * kMs);
  EXPECT_EQ(v.action, ShareAction::kGiveCached);
  EXPECT_EQ(v.fair_share, 45 * kPage);
  EXPECT_EQ(v.give_bytes, 35 * kPage);
  EXPECT_EQ(v.others_deficit, 35 * kPage);
  EXPECT_EQ(v.starved_index, 1U);
  // C holds exactly its share: it gives nothing (it only admits no more while B starves).
  EXPECT_EQ(DecideShare(e, 2, 100 * kPage, kPage, kNow, 500 * kMs).give_bytes, 0U);
}

TEST(ShareVerdicts, AtItsShareItStopsAdmittingButGivesNothing) {
  // A holds exactly its 45 pages while B is refused at 10: freed pages are for B.
  const std::vector<ShareInput> e = {Content(45), Starved(10), Content(10)};
  const ShareVerdict v = DecideShare(e, 0, 100 * kPage, kPage, kNow, 0);
  EXPECT_EQ(v.action, ShareAction::kStopAdmitting);
  EXPECT_EQ(v.give_bytes, 0U);
}

TEST(ShareVerdicts, AnEngineThatHasNotAskedYetIsNotHeldAtWhatItHolds) {
  // C holds nothing and was never refused; B is starved. C may still admit: its share, if it
  // asks, is a third.
  const std::vector<ShareInput> e = {Content(66), Starved(0), Content(0)};
  const ShareVerdict v = DecideShare(e, 2, 99 * kPage, kPage, kNow, 0);
  EXPECT_EQ(v.action, ShareAction::kOk);
  EXPECT_EQ(v.fair_share, 33 * kPage);
  EXPECT_EQ(ShareIfAsking(e, 2, 99 * kPage, kPage), 33 * kPage);
  EXPECT_EQ(FairShares(e, 99 * kPage, kPage)[2], 0U) << "what it holds, while it does not ask";
}

TEST(ShareVerdicts, SparePoolPagesMeanOnlyStopAdmitting) {
  std::vector<ShareInput> e = {Content(100), Starved(0)};
  e[0].reserved = 60 * kPage;  // its pool gives these back on pressure by itself
  EXPECT_EQ(DecideShare(e, 0, 100 * kPage, kPage, kNow, 500 * kMs).action,
            ShareAction::kStopAdmitting);
  e[0].reserved = 49 * kPage;
  EXPECT_EQ(DecideShare(e, 0, 100 * kPage, kPage, kNow, 500 * kMs).action,
            ShareAction::kGiveCached);
}

TEST(ShareVerdicts, PreemptOnlyAfterTheBoundFromTheFirstRefusal) {
  const std::uint64_t first = kNow - 400 * kMs;
  const std::vector<ShareInput> e = {Content(100), Starved(0, 1, 0, first)};
  ShareVerdict v = DecideShare(e, 0, 100 * kPage, kPage, kNow, 500 * kMs);
  EXPECT_EQ(v.action, ShareAction::kGiveCached);
  EXPECT_EQ(v.starved_ns, 400 * kMs);
  v = DecideShare(e, 0, 100 * kPage, kPage, first + 500 * kMs, 500 * kMs);
  EXPECT_EQ(v.action, ShareAction::kPreempt);
  EXPECT_EQ(v.give_bytes, 50 * kPage);
  // The earliest of several starved engines sets the clock.
  const std::vector<ShareInput> three = {Content(100), Starved(0, 1, 0, kNow - 100 * kMs),
                                         Starved(0, 1, 0, kNow - 700 * kMs)};
  v = DecideShare(three, 0, 100 * kPage, kPage, kNow, 500 * kMs);
  EXPECT_EQ(v.action, ShareAction::kPreempt);
  EXPECT_EQ(v.starved_index, 2U);
  EXPECT_EQ(v.give_bytes, 66 * kPage);  // shares 34/33/33 (rounding), A gives 66
}

TEST(ShareVerdicts, AStarvedEngineWithinOnePageOfItsShareStarvesNobody) {
  // B is refused at 49.5 pages of a 50-page share: pages cannot do better.
  std::vector<ShareInput> e = {Content(50), Starved(49)};
  e[1].held += kPage / 2;
  EXPECT_EQ(DecideShare(e, 0, 100 * kPage, kPage, kNow, 0).action, ShareAction::kOk);
}

TEST(ShareVerdicts, WhenEveryEngineIsAtOrOverItsShareNobodyIsAsked) {
  // Nobody starved: everyone keeps what it holds, however lopsided.
  const std::vector<ShareInput> e = {Content(90), Content(5), Content(5)};
  for (std::size_t i = 0; i < e.size(); ++i) {
    EXPECT_EQ(DecideShare(e, i, 100 * kPage, kPage, kNow, 0).action, ShareAction::kOk) << i;
  }
  // All starved and over... their shares add up to the budget, so each is at its share.
  const std::vector<ShareInput> s = {Starved(50), Starved(50)};
  EXPECT_EQ(DecideShare(s, 0, 100 * kPage, kPage, kNow, 0).action, ShareAction::kOk);
  EXPECT_EQ(DecideShare(s, 1, 100 * kPage, kPage, kNow, 0).action, ShareAction::kOk);
}

TEST(ShareVerdicts, ActionNamesAreTheDocumentedOnes) {
  EXPECT_STREQ(ShareActionName(ShareAction::kOk), "ok");
  EXPECT_STREQ(ShareActionName(ShareAction::kStopAdmitting), "stop_admitting");
  EXPECT_STREQ(ShareActionName(ShareAction::kGiveCached), "give_cached");
  EXPECT_STREQ(ShareActionName(ShareAction::kPreempt), "preempt");
}

}  // namespace
}  // namespace kvcached
