#include "core/region/demand_rate.h"

#include <algorithm>
#include <cmath>

namespace kvcached {

double DemandRate::RateAt(std::int64_t now_ns) const {
  if (rate_ <= 0.0) return 0.0;
  // The warm acquire notes and then reads the target at the same instant: no exp() for no time.
  if (now_ns <= last_ns_) return rate_;
  const auto dt = static_cast<double>(now_ns - last_ns_);
  return rate_ * std::exp(-dt / static_cast<double>(kTauNs));
}

void DemandRate::Note(std::size_t pages, std::int64_t now_ns) {
  if (pages == 0) return;
  // Each page adds 1/tau to the rate: n pages a step every T seconds settle at n/T pages/s.
  rate_ = RateAt(now_ns) + static_cast<double>(pages) * 1e9 / static_cast<double>(kTauNs);
  last_ns_ = std::max(last_ns_, now_ns);
  last_pages_ = pages;
}

std::size_t DemandRate::Target(std::int64_t now_ns, std::size_t base, std::size_t cap) const {
  if (cap <= base) return base;
  double ahead = RateAt(now_ns) * static_cast<double>(kHorizonNs) / 1e9;
  if (now_ns - last_ns_ <= kTauNs) ahead = std::max(ahead, static_cast<double>(last_pages_));
  // Below one page the burst is over: the fixed reserve again.
  if (ahead < 1.0) return base;
  return std::clamp(static_cast<std::size_t>(std::ceil(ahead)), base, cap);
}

}  // namespace kvcached
