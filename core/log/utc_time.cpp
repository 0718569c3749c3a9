#include "core/log/utc_time.h"

namespace kvcached::log {
namespace {

constexpr std::int64_t kMsPerDay = 86'400'000;

// Writes v (clamped to [0, 10^width)) as `width` decimal digits.
char* Digits(char* out, std::int64_t v, int width) {
  if (v < 0) v = 0;
  for (int k = width - 1; k >= 0; --k, v /= 10) out[k] = static_cast<char>('0' + v % 10);
  return out + width;
}

}  // namespace

void FormatUtcMs(std::int64_t ms, std::array<char, 23>& out) {
  std::int64_t days = ms / kMsPerDay;
  std::int64_t in_day = ms % kMsPerDay;
  if (in_day < 0) {
    in_day += kMsPerDay;
    --days;
  }
  // Days to a civil date in the proleptic Gregorian calendar: eras of 400 years (146097 days)
  // counted from 0000-03-01, so that the leap day ends each year.
  const std::int64_t z = days + 719'468;
  const std::int64_t era = (z >= 0 ? z : z - 146'096) / 146'097;
  const std::int64_t doe = z - era * 146'097;
  const std::int64_t yoe = (doe - doe / 1460 + doe / 36'524 - doe / 146'096) / 365;
  const std::int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const std::int64_t mp = (5 * doy + 2) / 153;  // 0 = March
  const std::int64_t day = doy - (153 * mp + 2) / 5 + 1;
  const std::int64_t month = mp < 10 ? mp + 3 : mp - 9;
  const std::int64_t year = yoe + era * 400 + (month <= 2 ? 1 : 0);

  char* p = Digits(out.data(), year, 4);
  *p++ = '-';
  p = Digits(p, month, 2);
  *p++ = '-';
  p = Digits(p, day, 2);
  *p++ = ' ';
  p = Digits(p, in_day / 3'600'000, 2);
  *p++ = ':';
  p = Digits(p, in_day / 60'000 % 60, 2);
  *p++ = ':';
  p = Digits(p, in_day / 1000 % 60, 2);
  *p++ = '.';
  Digits(p, in_day % 1000, 3);
}

}  // namespace kvcached::log
