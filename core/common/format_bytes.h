// Human-readable byte counts for messages ("2 MiB", "1.5 GiB").
#pragma once

#include <cstdint>
#include <string>

namespace kvcached {

std::string FormatBytes(std::uint64_t bytes);

}  // namespace kvcached
