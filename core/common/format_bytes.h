// Human-readable byte counts for messages and kvctl ("2 MiB", "1.5 GiB"): binary units up to EiB,
// exact multiples without decimals, others with up to two; what ParseSize reads back.
#pragma once

#include <cstdint>
#include <string>

namespace kvcached {

std::string FormatBytes(std::uint64_t bytes);

}  // namespace kvcached
