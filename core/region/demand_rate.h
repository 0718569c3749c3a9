// DemandRate: how many pages a lazy region should keep mapped ahead while the engine's demand
// grows. An engine's cache grows in bursts (a serving load's first prefill steps back gigabytes in
// a second); mapped one acquire at a time, every page costs the engine's scheduler a driver swap
// (~50-150 us). Map-ahead takes that off the engine's thread only if the reserve covers the next
// steps' demand, so the reserve follows the recent acquire rate instead of staying at a fixed few
// pages, and falls back to the fixed few within about a second of the growth stopping.
//
// Not thread-safe: the owning region calls it under its mutex.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvcached {

class DemandRate {
 public:
  // The rate is an exponentially weighted count of pages per second with this time constant:
  // long enough to span a few engine steps (tens of ms each), short enough that a reserve sized
  // for a burst is gone about a second after it.
  static constexpr std::int64_t kTauNs = 200'000'000;
  // The reserve covers this much time at the recent rate: the next step or two.
  static constexpr std::int64_t kHorizonNs = 100'000'000;

  // `pages` became in use at `now_ns` (an acquire).
  void Note(std::size_t pages, std::int64_t now_ns);
  // Pages to keep mapped ahead at `now_ns`: `base` (KVCACHED_MAP_AHEAD_PAGES), or more while the
  // recent demand is higher, at most `cap` (KVCACHED_MAP_AHEAD_BURST_PAGES; 0: always `base`).
  // Recent demand: the rate over the horizon, and at least the last acquire's pages while it is
  // younger than kTauNs (the next step probably needs as much: the rate alone would cover only
  // half of a burst's second step after an idle spell).
  [[nodiscard]] std::size_t Target(std::int64_t now_ns, std::size_t base, std::size_t cap) const;
  // Forgets the demand (the engine went idle and trimmed: its next burst starts from `base`).
  void Reset() {
    rate_ = 0.0;
    last_pages_ = 0;
  }

 private:
  [[nodiscard]] double RateAt(std::int64_t now_ns) const;

  double rate_ = 0.0;  // pages per second at last_ns_
  std::int64_t last_ns_ = 0;
  std::size_t last_pages_ = 0;  // of the last Note
};

}  // namespace kvcached
