// Numeric command-line values of kvctl, parsed by hand so that junk, signs, exponents, inf/nan and
// out-of-range values get one message naming the option, the value and the accepted range
// ("--interval: 'abc' is not a number of seconds (0.05..3600)"), never a C-formatted range.
#pragma once

#include <cstdint>
#include <string>

#include "core/common/status.h"

namespace kvctl {

// A plain decimal number of seconds ("2", "0.5", ".25") within [lo, hi].
kvcached::Result<double> ParseSeconds(const std::string& option, const std::string& text, double lo,
                                      double hi);
// A plain decimal integer within [lo, hi].
kvcached::Result<std::uint64_t> ParseCount(const std::string& option, const std::string& text,
                                           std::uint64_t lo, std::uint64_t hi);

// "0.05", "3600", "1.5": a range bound as an operator would type it.
std::string FormatNumber(double value);

}  // namespace kvctl
