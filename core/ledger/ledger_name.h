// Names of ledger segments. Every segment lives in /dev/shm as "kvcached_<something>", where
// <something> only holds [A-Za-z0-9_.-]: no name can escape /dev/shm or touch another file.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/common/status.h"

namespace kvcached::ledger {

inline constexpr std::string_view kShmDir = "/dev/shm";
inline constexpr std::string_view kNamePrefix = "kvcached_";

// "kvcached_" + sanitised KVCACHED_IPC_NAME when set, else "kvcached_gpu_" + sanitised GPU UUID
// (or "kvcached_gpu_dev<ordinal>" when the driver reports no UUID). With `per_user` (the default
// name of an engine that does not share on purpose, see DefaultSegmentName) the GPU name becomes
// "kvcached_u<uid>_gpu_<uuid>": each user has a segment of its own that no other user can
// create first.
std::string SegmentNameFor(std::string_view ipc_name, std::string_view gpu_uuid, int ordinal,
                           std::optional<unsigned> per_user = std::nullopt);
// "/dev/shm/" + name.
std::string SegmentPath(std::string_view name);
// True for "kvcached_" followed by 1..200 characters of [A-Za-z0-9_.-], not "." or "..".
bool IsSegmentName(std::string_view name);
// Accepts what an operator types: "x", "kvcached_x" or "/dev/shm/kvcached_x". Refuses anything
// that would not name a kvcached segment (other files, other directories, odd characters).
Result<std::string> NormalizeSegmentName(std::string_view input);

}  // namespace kvcached::ledger
