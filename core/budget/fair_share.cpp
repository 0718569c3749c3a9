#include "core/budget/fair_share.h"

#include <algorithm>
#include <numeric>

namespace kvcached {
namespace {

__extension__ typedef unsigned __int128 u128;  // NOLINT(modernize-use-using): pedantic-safe

std::uint64_t Weight(const ShareInput& e) {
  return e.weight_milli == 0 ? kShareWeightScale : e.weight_milli;
}

// What engine i would get at water level `level` (bytes per weight unit, scaled by 1000).
std::uint64_t AllocAt(std::uint64_t level, std::uint64_t weight, std::uint64_t min,
                      std::uint64_t demand) {
  const u128 by_weight = static_cast<u128>(level) * weight / kShareWeightScale;
  const u128 wanted = std::max<u128>(by_weight, min);
  return static_cast<std::uint64_t>(std::min<u128>(wanted, demand));
}

}  // namespace

std::vector<std::uint64_t> FairShares(std::span<const ShareInput> engines, std::uint64_t budget,
                                      std::uint64_t granule) {
  const std::size_t n = engines.size();
  std::vector<std::uint64_t> shares(n, 0);
  if (n == 0 || budget == 0) return shares;
  const std::uint64_t g = std::max<std::uint64_t>(granule, 1);

  // Demands: a starved engine wants everything it can get; any other one what it holds.
  std::vector<std::uint64_t> demand(n);
  std::vector<std::uint64_t> weight(n);
  std::vector<std::uint64_t> min(n);
  u128 demand_sum = 0;
  u128 min_sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    demand[i] = engines[i].starved_since_ns != 0 ? budget : std::min(engines[i].held, budget);
    weight[i] = Weight(engines[i]);
    min[i] = std::min(engines[i].min_bytes, demand[i]);
    demand_sum += demand[i];
    min_sum += min[i];
  }
  // Promised minimums that do not fit are cut in proportion (an operator's over-promise must not
  // make the budget overflow).
  if (min_sum > budget) {
    for (std::size_t i = 0; i < n; ++i) {
      min[i] = static_cast<std::uint64_t>(static_cast<u128>(min[i]) * budget / min_sum);
    }
  }

  std::vector<std::uint64_t> exact(n);
  if (demand_sum <= budget) {
    exact = demand;  // everyone gets what it wants
  } else {
    // Highest level at which the allocations still fit: allocations grow with the level.
    auto total_at = [&](std::uint64_t level) {
      u128 sum = 0;
      for (std::size_t i = 0; i < n; ++i) sum += AllocAt(level, weight[i], min[i], demand[i]);
      return sum;
    };
    std::uint64_t lo = 0;                               // fits (the minimums fit)
    std::uint64_t hi = budget * kShareWeightScale + 1;  // weight >= 1/1000: over budget
    if (budget > (~std::uint64_t{0} - 1) / kShareWeightScale) hi = ~std::uint64_t{0};
    while (hi - lo > 1) {
      const std::uint64_t mid = lo + (hi - lo) / 2;
      (total_at(mid) <= budget ? lo : hi) = mid;
    }
    for (std::size_t i = 0; i < n; ++i) exact[i] = AllocAt(lo, weight[i], min[i], demand[i]);
  }

  // Whole granules: round down, then hand the granules still free in the budget, one each, to
  // the engines that lost the most by rounding (ties: the lower index), so that every share is
  // within one granule of its exact value.
  std::uint64_t used_granules = 0;
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) {
    shares[i] = exact[i] / g * g;
    used_granules += shares[i] / g;
    order[i] = i;
  }
  std::uint64_t free_granules = budget / g > used_granules ? budget / g - used_granules : 0;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return exact[a] - shares[a] > exact[b] - shares[b];
  });
  for (std::size_t i : order) {
    if (free_granules == 0 || exact[i] == shares[i]) break;
    shares[i] += g;
    --free_granules;
  }
  return shares;
}

ShareVerdict DecideShare(std::span<const ShareInput> engines, std::size_t self,
                         std::uint64_t budget, std::uint64_t granule, std::uint64_t now_ns,
                         std::uint64_t preempt_after_ns) {
  ShareVerdict v;
  if (self >= engines.size()) return v;
  const std::uint64_t g = std::max<std::uint64_t>(granule, 1);
  // Judged as if this engine asked for more too: an engine that holds little because it has not
  // asked yet must not be told it is "at its share" of what it holds.
  std::vector<ShareInput> asking(engines.begin(), engines.end());
  if (asking[self].starved_since_ns == 0) asking[self].starved_since_ns = now_ns == 0 ? 1 : now_ns;
  const std::vector<std::uint64_t> shares = FairShares(asking, budget, g);
  v.fair_share = shares[self];
  v.held = engines[self].held;
  v.weight_milli = Weight(engines[self]);
  v.min_bytes = engines[self].min_bytes;
  std::uint64_t earliest = 0;
  for (std::size_t j = 0; j < engines.size(); ++j) {
    const ShareInput& e = engines[j];
    if (j == self || e.starved_since_ns == 0) continue;
    // Less than a granule short is as close as pages allow: not starved.
    if (shares[j] < e.held || shares[j] - e.held < g) continue;
    v.others_deficit += shares[j] - e.held;
    if (earliest == 0 || e.starved_since_ns < earliest) {
      earliest = e.starved_since_ns;
      v.starved_index = j;
    }
  }
  if (earliest != 0) v.starved_ns = now_ns > earliest ? now_ns - earliest : 0;
  if (v.others_deficit == 0 || v.held < v.fair_share) return v;  // never asked anything
  if (v.held == v.fair_share) {
    // At its share: nothing to give, but pages freed for the starved engine are not for it.
    v.action = ShareAction::kStopAdmitting;
    return v;
  }

  const std::uint64_t excess = v.held - v.fair_share;
  const std::uint64_t give = std::min(excess, v.others_deficit);
  v.give_bytes = (give + g - 1) / g * g;
  if (v.starved_ns >= preempt_after_ns) {
    v.action = ShareAction::kPreempt;
  } else if (v.give_bytes <= engines[self].reserved) {
    v.action = ShareAction::kStopAdmitting;  // its pool's spare pages cover it (pressure)
  } else {
    v.action = ShareAction::kGiveCached;
  }
  return v;
}

std::uint64_t ShareIfAsking(std::span<const ShareInput> engines, std::size_t index,
                            std::uint64_t budget, std::uint64_t granule) {
  if (index >= engines.size()) return 0;
  std::vector<ShareInput> asking(engines.begin(), engines.end());
  if (asking[index].starved_since_ns == 0) asking[index].starved_since_ns = 1;
  return FairShares(asking, budget, granule)[index];
}

const char* ShareActionName(ShareAction action) {
  switch (action) {
    case ShareAction::kOk:
      return "ok";
    case ShareAction::kStopAdmitting:
      return "stop_admitting";
    case ShareAction::kGiveCached:
      return "give_cached";
    case ShareAction::kPreempt:
      return "preempt";
  }
  return "unknown";
}

}  // namespace kvcached
