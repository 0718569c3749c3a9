// Validation of a ledger segment's bytes. Pure (no I/O, no globals, no allocation beyond the
// result) so that it can be fed millions of mutated images by the fuzz test; the opener runs it
// on a word-by-word copy of the mapped segment (ledger_atomics.h CopyWords).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/common/status.h"

namespace kvcached::ledger {

struct SegmentSummary {
  std::uint32_t slot_count = 0;
  std::uint64_t gpu_total = 0;
  std::uint64_t budget = 0;
  std::string gpu_uuid;
};

// Accepts a well-formed segment, or returns kInvalid with one message that names `path` (e.g.
// "/dev/shm/kvcached_x"), says what is wrong and how to fix it.
Result<SegmentSummary> ValidateSegment(std::span<const std::byte> bytes, std::string_view path);

// The message for a segment that cannot be used: "<what> <path>: <reason>. Fix: ...".
std::string SegmentProblem(std::string_view path, std::string_view reason);

}  // namespace kvcached::ledger
