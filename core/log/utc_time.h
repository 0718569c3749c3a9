// Log timestamps without libc's time functions. localtime_r and gmtime_r take glibc's
// time-zone lock: a child forked while a parent thread held it would block forever on its first
// timestamp. Engines fork (worker pools, multiprocessing), and their children log too.
#pragma once

#include <array>
#include <cstdint>

namespace kvcached::log {

// Writes "YYYY-MM-DD HH:MM:SS.mmm" (UTC, 23 characters, no terminator) for `ms` milliseconds
// since the Unix epoch into out[0..23). Years outside 0..9999 are clamped to four digits.
void FormatUtcMs(std::int64_t ms, std::array<char, 23>& out);

}  // namespace kvcached::log
