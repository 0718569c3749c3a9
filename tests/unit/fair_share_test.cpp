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

// A random unit: mostly whole pages (1-4, as engines publish), at times none (the page) or an odd
// byte count (the arithmetic must not depend on pages).
std::uint64_t RandomUnit(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0:
      return 0;
    case 1:
      return 1 + rng() % (3 * kPage);
    default:
      return (1 + rng() % 4) * kPage;
  }
}

// The properties that define weighted max-min with minimums, on random inputs; each engine has its
// own unit, and holds whole units plus memory outside them (the shim's zero memory).
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
      in.held = (rng() % (budget_pages + 1)) * kPage + (rng() % 2 == 0 ? rng() % kPage : 0);
      in.starved_since_ns = rng() % 2 == 0 ? kNow : 0;
      in.unit = round < 500 ? 0 : RandomUnit(rng);  // the first rounds: pages, as before units
      e.push_back(in);
    }
    const std::uint64_t budget = budget_pages * kPage;
    const auto shares = FairShares(e, budget, kPage);
    // What an engine holds beyond whole units stays its own; the rest of the budget (the pool)
    // is divided in units: the properties hold for the shares less those offsets.
    std::vector<double> a(n), demand(n), min(n), unit(n);
    std::uint64_t offset_sum = 0;
    for (std::size_t i = 0; i < n; ++i) offset_sum += e[i].held % UnitOf(e[i], kPage);
    const bool offsets = offset_sum <= budget;  // else (more held than the budget) whole units
    if (!offsets) offset_sum = 0;
    const double pool = double(budget - offset_sum);
    double demand_sum = 0, min_sum = 0, sum = 0, unit_sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t u = UnitOf(e[i], kPage);
      const std::uint64_t off = offsets ? e[i].held % u : 0;
      ASSERT_GE(shares[i], off) << "below what it cannot give";
      ASSERT_EQ((shares[i] - off) % u, 0U)
          << "engine " << i << "'s share " << shares[i] << " is not what it holds (" << e[i].held
          << ") plus or minus whole units of " << u;
      a[i] = double(shares[i] - off);
      const double wants =
          e[i].starved_since_ns != 0 ? double(budget) : double(std::min(e[i].held, budget));
      demand[i] = std::min(wants - double(off), pool);
      min[i] = std::min(std::max(double(e[i].min_bytes) - double(off), 0.0), demand[i]);
      unit[i] = double(u);
      demand_sum += demand[i];
      min_sum += min[i];
      sum += double(shares[i]);
      unit_sum += unit[i];
    }
    const double scale = min_sum > pool ? pool / min_sum : 1.0;
    SCOPED_TRACE(::testing::Message() << "round " << round);
    ASSERT_LE(sum, double(budget));
    if (demand_sum >= pool) {
      EXPECT_GE(sum + unit_sum, double(budget)) << "work conserving";
    }
    for (std::size_t i = 0; i < n; ++i) {
      const double g = unit[i];
      EXPECT_LE(a[i], demand[i] + g) << "more than it wants";
      EXPECT_GE(a[i] + g, min[i] * scale) << "minimum not honoured";
      // Nobody unsatisfied may get less per weight than another engine gets beyond its minimum.
      if (a[i] + g >= demand[i]) continue;
      for (std::size_t j = 0; j < n; ++j) {
        if (a[j] <= min[j] * scale + unit[j]) continue;
        // Up to a unit each way for rounding, a byte for the level's integer steps.
        const double per_i = (a[i] + g) / double(e[i].weight_milli);
        const double per_j = (a[j] - unit[j]) / double(e[j].weight_milli);
        EXPECT_GE(per_i + 1.0, per_j) << "engine " << i << " is short while " << j << " gets more";
      }
    }
  }
}

ShareInput WithUnit(ShareInput in, std::uint64_t unit_pages) {
  in.unit = unit_pages * kPage;
  return in;
}

TEST(FairShares, SharesAreReachableInEachEnginesUnits) {
  // The real-shim case: 32 pages; A (vLLM, unit 2 pages: K and V) holds 25: its 7 pages of zero
  // memory and 9 units, i.e. one page outside whole units; B (unit 1 page) holds its zero memory,
  // 7 pages, and asks. A's odd page stays A's; the other 31 are divided: 15.5 each, A's rounded
  // in its units (16, the larger loss), B's in pages (15). A: 16 + 1 = 17.
  std::vector<ShareInput> asking = {WithUnit(Starved(25), 2), WithUnit(Starved(7), 1)};
  EXPECT_EQ(Pages(asking, 32), (P{17, 15}));
  // Units of 4 pages from 0: the exact 50/50 of 102 pages is 51; both round to 48, then one of
  // them (the lower index on a tie) gets the next unit, 52: 100 of 102 pages.
  EXPECT_EQ(Pages({WithUnit(Starved(0), 4), WithUnit(Starved(0), 4)}, 102), (P{52, 48}));
  // What an engine holds outside whole units stays its own: 3 pages (unit 8) leave 1 of 4.
  EXPECT_EQ(Pages({WithUnit(Starved(3), 8), WithUnit(Starved(0), 1)}, 4), (P{3, 1}));
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

TEST(ShareVerdicts, WhatTheStarvedEngineAskedForBoundsTheGiftAndFreeMemoryCountsFirst) {
  // A 90 of 100, B 10 and starved (share 50): asking for 3 pages, it is given 3, not its 40.
  ShareInput b = Starved(10);
  b.want = 3 * kPage;
  ShareVerdict v =
      DecideShare(std::vector<ShareInput>{Content(90), b}, 0, 100 * kPage, kPage, kNow, 500 * kMs);
  EXPECT_EQ(v.others_deficit, 3 * kPage);
  EXPECT_EQ(v.give_bytes, 3 * kPage);
  EXPECT_EQ(v.action, ShareAction::kGiveCached);
  // A gave them and B has not taken them yet (A 87, 3 free): nothing more to give, but A admits
  // nothing (those pages are B's).
  v = DecideShare(std::vector<ShareInput>{Content(87), b}, 0, 100 * kPage, kPage, kNow, 500 * kMs);
  EXPECT_EQ(v.give_bytes, 0U);
  EXPECT_EQ(v.action, ShareAction::kStopAdmitting);
  // Part free: only the rest is asked (B asks 5, 2 are free: 3).
  b.want = 5 * kPage;
  v = DecideShare(std::vector<ShareInput>{Content(88), b}, 0, 100 * kPage, kPage, kNow, 500 * kMs);
  EXPECT_EQ(v.give_bytes, 3 * kPage);
  // Asking for more than its deficit: the deficit (40); not known (0): the deficit too.
  b.want = 70 * kPage;
  v = DecideShare(std::vector<ShareInput>{Content(90), b}, 0, 100 * kPage, kPage, kNow, 500 * kMs);
  EXPECT_EQ(v.give_bytes, 40 * kPage);
  b.want = 0;
  v = DecideShare(std::vector<ShareInput>{Content(90), b}, 0, 100 * kPage, kPage, kNow, 500 * kMs);
  EXPECT_EQ(v.give_bytes, 40 * kPage);
  // In the giver's units: asked for 3 pages, an engine of 2-page units gives 4.
  ShareInput a = Content(90);
  a.unit = 2 * kPage;
  b.want = 3 * kPage;
  v = DecideShare(std::vector<ShareInput>{a, b}, 0, 100 * kPage, kPage, kNow, 500 * kMs);
  EXPECT_EQ(v.give_bytes, 4 * kPage);
}

TEST(ShareVerdicts, SeveralEnginesAboveTheirSharesSplitWhatWasAskedForOnce) {
  // A 50 and C 40 of 100 (shares about 33 each), B 10 and starved, asking for 12 pages: A and C
  // each read the same request; together they give it once (not 12 each), A the larger part.
  ShareInput b = Starved(10);
  b.want = 12 * kPage;
  const std::vector<ShareInput> e = {Content(50), b, Content(40)};
  const ShareVerdict a = DecideShare(e, 0, 100 * kPage, kPage, kNow, 500 * kMs);
  const ShareVerdict c = DecideShare(e, 2, 100 * kPage, kPage, kNow, 500 * kMs);
  EXPECT_EQ(a.others_deficit, 12 * kPage);
  EXPECT_GT(c.give_bytes, 0U);
  EXPECT_GT(a.give_bytes, c.give_bytes);
  EXPECT_GE(a.give_bytes + c.give_bytes, 12 * kPage) << "the parts cover the request";
  EXPECT_LE(a.give_bytes + c.give_bytes, 14 * kPage) << "each part rounds up by at most a page";
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

TEST(ShareVerdicts, TheStarvedEngineReachesItsShareInItsUnitsAndTheEpisodeEnds) {
  // The real-shim case (see SharesAreReachableInEachEnginesUnits): A holds 25 pages, B is
  // starved at its 7 pages of zero memory. A's share is 17, B's 15.
  std::vector<ShareInput> e = {WithUnit(Content(25), 2), WithUnit(Starved(7), 1)};
  ShareVerdict v = DecideShare(e, 0, 32 * kPage, kPage, kNow, 0);
  EXPECT_EQ(v.fair_share, 17 * kPage);
  EXPECT_EQ(v.action, ShareAction::kPreempt);
  EXPECT_EQ(v.give_bytes, 8 * kPage) << "four of A's units";
  // A gives them, B takes them: both at their shares, nobody is asked anything more.
  e[0].held -= 8 * kPage;
  e[1].held += 8 * kPage;
  v = DecideShare(e, 0, 32 * kPage, kPage, kNow, 0);
  EXPECT_EQ(v.action, ShareAction::kOk);
  EXPECT_EQ(v.others_deficit, 0U);
  EXPECT_EQ(DecideShare(e, 1, 32 * kPage, kPage, kNow, 0).action, ShareAction::kOk);
  // In pages alone (no units published) the same state leaves B one page short of 16 and A one
  // page above it: A is asked for a page that it, moving two at a time, cannot give without
  // going below its share, and the episode never ends (the defect units fix).
  const std::vector<ShareInput> pages = {Content(17), Starved(15)};
  v = DecideShare(pages, 0, 32 * kPage, kPage, kNow, 0);
  EXPECT_EQ(v.fair_share, 16 * kPage);
  EXPECT_EQ(v.give_bytes, kPage);
  EXPECT_EQ(v.action, ShareAction::kPreempt);
}

TEST(ShareVerdicts, StarvedOnlyWhileItLacksOneOfItsOwnUnits) {
  // 100 pages, half each. B's unit is 4 pages and it holds 48: its next point, 52, is past its
  // 50, so 48 is its share and it is not starved; A, 2 pages above its 50, is asked nothing.
  std::vector<ShareInput> e = {Content(52), WithUnit(Starved(48), 4)};
  EXPECT_EQ(ShareIfAsking(e, 1, 100 * kPage, kPage), 48 * kPage);
  EXPECT_EQ(DecideShare(e, 0, 100 * kPage, kPage, kNow, 0).action, ShareAction::kOk);
  // In pages B would be 2 pages short, and A asked to give them.
  EXPECT_NE(
      DecideShare(std::vector<ShareInput>{Content(52), Starved(48)}, 0, 100 * kPage, kPage, kNow, 0)
          .action,
      ShareAction::kOk);
  // A (unit 3, holds 58: 1 page outside its units) and B (unit 4, holds 39: 3 outside): the
  // other 96 pages are split 48/48, whole units both: A 49, B 51. B lacks 12 pages; A gives what
  // it holds above its share, 9 pages, in its units.
  e = {WithUnit(Content(58), 3), WithUnit(Starved(39), 4)};
  const ShareVerdict v = DecideShare(e, 0, 100 * kPage, kPage, kNow, 0);
  EXPECT_EQ(v.fair_share, 49 * kPage);
  EXPECT_EQ(v.others_deficit, 12 * kPage);
  EXPECT_EQ(v.give_bytes, 9 * kPage);
  // B lacks less than one of A's units: A gives a whole unit (that keeps it at its share).
  e = {WithUnit(Content(52), 3), Starved(48)};  // A: 1 + 48, B: 50 (99 pages: 48 and 49, +1)
  const ShareVerdict w = DecideShare(e, 0, 100 * kPage, kPage, kNow, 0);
  EXPECT_EQ(w.fair_share, 49 * kPage);
  EXPECT_EQ(w.others_deficit, 2 * kPage);
  EXPECT_EQ(w.give_bytes, 3 * kPage);
}

// Engines that move only in their own units (giving what they are asked, taking what they lack
// while the budget has room) reach a state in which nobody is asked anything: every episode ends.
TEST(ShareVerdicts, RandomEnginesMovingInTheirUnitsEndEveryEpisode) {
  std::mt19937_64 rng(13);
  for (int round = 0; round < 3000; ++round) {
    const std::uint64_t budget = (16 + rng() % 200) * kPage;
    const std::size_t n = 2 + rng() % 3;
    std::vector<ShareInput> e(n);
    std::uint64_t used = 0;
    for (ShareInput& in : e) {
      in.weight_milli = 500 + 500 * (rng() % 4);
      in.unit = (1 + rng() % 4) * kPage;
      in.held = (rng() % 8) * kPage;  // zero memory, outside its units
      in.starved_since_ns = kNow;     // everybody asks for more
      used += in.held;
    }
    if (used > budget) continue;
    // The first engine takes the rest of the budget in its units.
    const std::uint64_t first = (budget - used) / e[0].unit * e[0].unit;
    e[0].held += first;
    SCOPED_TRACE(::testing::Message() << "round " << round);
    bool settled = false;
    for (int step = 0; step < 20 && !settled; ++step) {
      settled = true;
      for (std::size_t i = 0; i < n; ++i) {
        const ShareVerdict v = DecideShare(e, i, budget, kPage, kNow, 0);
        ASSERT_EQ(v.give_bytes % e[i].unit, 0U) << "not in its units";
        ASSERT_LE(v.give_bytes, v.held > v.fair_share ? v.held - v.fair_share : 0);
        if (v.action != ShareAction::kOk) settled = false;
        e[i].held -= v.give_bytes;
      }
      for (std::size_t i = 0; i < n; ++i) {
        std::uint64_t sum = 0;
        for (const ShareInput& x : e) sum += x.held;
        const std::uint64_t share = ShareIfAsking(e, i, budget, kPage);
        const std::uint64_t want = share > e[i].held ? share - e[i].held : 0;
        const std::uint64_t room = budget - sum;
        e[i].held += std::min(want, room) / e[i].unit * e[i].unit;
      }
    }
    if (!settled) {
      for (std::size_t i = 0; i < n; ++i) {
        const ShareVerdict v = DecideShare(e, i, budget, kPage, kNow, 0);
        ADD_FAILURE() << "engine " << i << " unit " << e[i].unit / kPage << " weight "
                      << e[i].weight_milli << " held " << double(e[i].held) / kPage << " share "
                      << double(v.fair_share) / kPage << " action " << ShareActionName(v.action)
                      << " give " << double(v.give_bytes) / kPage << " deficit "
                      << double(v.others_deficit) / kPage << " budget " << budget / kPage;
      }
    }
    EXPECT_TRUE(settled) << "an episode never ends";
  }
}

TEST(ShareVerdicts, ActionNamesAreTheDocumentedOnes) {
  EXPECT_STREQ(ShareActionName(ShareAction::kOk), "ok");
  EXPECT_STREQ(ShareActionName(ShareAction::kStopAdmitting), "stop_admitting");
  EXPECT_STREQ(ShareActionName(ShareAction::kGiveCached), "give_cached");
  EXPECT_STREQ(ShareActionName(ShareAction::kPreempt), "preempt");
}

}  // namespace
}  // namespace kvcached
