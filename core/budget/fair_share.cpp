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

std::uint64_t UnitOf(const ShareInput& engine, std::uint64_t granule) {
  return std::max<std::uint64_t>(engine.unit != 0 ? engine.unit : granule, 1);
}

std::vector<std::uint64_t> FairShares(std::span<const ShareInput> engines, std::uint64_t budget,
                                      std::uint64_t granule) {
  const std::size_t n = engines.size();
  std::vector<std::uint64_t> shares(n, 0);
  if (n == 0 || budget == 0) return shares;
  const std::uint64_t g = std::max<std::uint64_t>(granule, 1);

  // What an engine holds beyond whole units (held modulo its unit: a page outside its KV
  // tensors, say) it can neither give nor add to: it stays the engine's, outside the division,
  // and the rest of the budget is divided in whole units.
  std::vector<std::uint64_t> unit(n);
  std::vector<std::uint64_t> offset(n);
  u128 offset_sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    unit[i] = UnitOf(engines[i], g);
    offset[i] = engines[i].held % unit[i];
    offset_sum += offset[i];
  }
  if (offset_sum > budget) {
    // Only when the engines together hold more than the budget (never on a ledger): whole units.
    std::fill(offset.begin(), offset.end(), 0);
    offset_sum = 0;
  }
  const std::uint64_t pool = budget - static_cast<std::uint64_t>(offset_sum);

  // Demands (beyond the offsets): a starved engine wants everything it can get; any other one
  // what it holds.
  std::vector<std::uint64_t> demand(n);
  std::vector<std::uint64_t> weight(n);
  std::vector<std::uint64_t> min(n);
  u128 demand_sum = 0;
  u128 min_sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t wants =
        engines[i].starved_since_ns != 0 ? budget : std::min(engines[i].held, budget);
    demand[i] = std::min(wants - std::min(wants, offset[i]), pool);
    weight[i] = Weight(engines[i]);
    const std::uint64_t promised = engines[i].min_bytes;
    min[i] = std::min(promised - std::min(promised, offset[i]), demand[i]);
    demand_sum += demand[i];
    min_sum += min[i];
  }
  // Promised minimums that do not fit are cut in proportion (an operator's over-promise must not
  // make the budget overflow).
  if (min_sum > pool) {
    for (std::size_t i = 0; i < n; ++i) {
      min[i] = static_cast<std::uint64_t>(static_cast<u128>(min[i]) * pool / min_sum);
    }
  }

  std::vector<std::uint64_t> exact(n);
  if (demand_sum <= pool) {
    exact = demand;  // everyone gets what it wants
  } else {
    // Highest level at which the allocations still fit: allocations grow with the level.
    auto total_at = [&](std::uint64_t level) {
      u128 sum = 0;
      for (std::size_t i = 0; i < n; ++i) sum += AllocAt(level, weight[i], min[i], demand[i]);
      return sum;
    };
    std::uint64_t lo = 0;                             // fits (the minimums fit)
    std::uint64_t hi = pool * kShareWeightScale + 1;  // weight >= 1/1000: over budget
    if (pool > (~std::uint64_t{0} - 1) / kShareWeightScale) hi = ~std::uint64_t{0};
    while (hi - lo > 1) {
      const std::uint64_t mid = lo + (hi - lo) / 2;
      (total_at(mid) <= pool ? lo : hi) = mid;
    }
    for (std::size_t i = 0; i < n; ++i) exact[i] = AllocAt(lo, weight[i], min[i], demand[i]);
  }

  // Whole units: round down, then hand the units still free, one each, to the engines that lost
  // the most by rounding (ties: the lower index) while one of theirs fits, so that every share
  // is within one unit of its exact value.
  u128 used = 0;
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) {
    shares[i] = exact[i] / unit[i] * unit[i];
    used += shares[i];
    order[i] = i;
  }
  std::uint64_t free = used < pool ? pool - static_cast<std::uint64_t>(used) : 0;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return exact[a] - shares[a] > exact[b] - shares[b];
  });
  for (std::size_t i : order) {
    if (exact[i] == shares[i]) break;  // sorted: nobody after it lost anything
    if (unit[i] > free) continue;      // a smaller unit further on may still fit
    shares[i] += unit[i];
    free -= unit[i];
  }
  for (std::size_t i = 0; i < n; ++i) shares[i] += offset[i];
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
    // Less than one of its own units short is as close as it can get: not starved.
    if (shares[j] < e.held || shares[j] - e.held < UnitOf(e, g)) continue;
    const std::uint64_t lacks = shares[j] - e.held;
    v.others_deficit += e.want != 0 ? std::min(lacks, e.want) : lacks;
    if (earliest == 0 || e.starved_since_ns < earliest) {
      earliest = e.starved_since_ns;
      v.starved_index = j;
    }
  }
  if (earliest != 0) v.starved_ns = now_ns > earliest ? now_ns - earliest : 0;
  if (v.others_deficit == 0 || v.held < v.fair_share) return v;  // never asked anything

  // What is free in the budget (given back and not taken yet) goes to the starved engines first.
  u128 held_sum = 0;
  for (const ShareInput& e : engines) held_sum += e.held;
  const std::uint64_t free = held_sum < budget ? budget - static_cast<std::uint64_t>(held_sum) : 0;
  const std::uint64_t asked = v.others_deficit > free ? v.others_deficit - free : 0;
  // Every engine above its share reads the same request: each gives its part, in proportion to
  // its excess, so that together they give it once (three engines: not twice what was asked).
  const std::uint64_t excess = v.held - v.fair_share;
  u128 excess_sum = 0;
  for (std::size_t j = 0; j < engines.size(); ++j) {
    if (engines[j].held > shares[j]) excess_sum += engines[j].held - shares[j];
  }
  const u128 part = excess_sum == 0 ? asked
                                    : (static_cast<u128>(asked) * excess + excess_sum - 1) /
                                          excess_sum;  // rounded up: the parts cover `asked`
  // In its own units: at least its part (a unit is the least it can give), never so much that
  // it goes below its share.
  const std::uint64_t unit = UnitOf(engines[self], g);
  const std::uint64_t give = static_cast<std::uint64_t>(std::min<u128>(excess, part));
  v.give_bytes = std::min((give + unit - 1) / unit * unit, excess / unit * unit);
  if (v.give_bytes == 0) {
    // At its share (in its units), or what is free already covers what the starved engines
    // asked for: nothing to give, but pages freed for them are not for it.
    v.action = ShareAction::kStopAdmitting;
    return v;
  }
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
