#include "core/ledger/ledger_name.h"

#include <fmt/core.h>

#include <algorithm>

#include "core/config/config.h"

namespace kvcached::ledger {

std::string SegmentNameFor(std::string_view ipc_name, std::string_view gpu_uuid, int ordinal,
                           std::optional<unsigned> per_user) {
  if (!ipc_name.empty()) {
    std::string clean = SanitizeIpcName(std::string(ipc_name));
    if (!clean.empty()) return std::string(kNamePrefix) + clean;
  }
  std::string uuid = SanitizeIpcName(std::string(gpu_uuid));
  if (uuid.empty()) uuid = fmt::format("dev{}", ordinal);
  if (per_user) return fmt::format("{}u{}_gpu_{}", kNamePrefix, *per_user, uuid);
  return std::string(kNamePrefix) + "gpu_" + uuid;
}

std::string SegmentPath(std::string_view name) {
  return fmt::format("{}/{}", kShmDir, name);
}

bool IsSegmentName(std::string_view name) {
  if (!name.starts_with(kNamePrefix)) return false;
  const std::string_view rest = name.substr(kNamePrefix.size());
  if (rest.empty() || rest.size() > 200) return false;
  return std::ranges::all_of(rest, [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

Result<std::string> NormalizeSegmentName(std::string_view input) {
  std::string_view name = input;
  const std::string dir = std::string(kShmDir) + "/";
  if (name.starts_with(dir)) name = name.substr(dir.size());
  if (name.find('/') != std::string_view::npos || name.empty()) {
    return Status(Errc::kInvalid,
                  fmt::format("'{}' is not a kvcached segment name: give NAME, kvcached_NAME or "
                              "/dev/shm/kvcached_NAME (see `kvctl list`)",
                              input));
  }
  std::string full(name);
  if (!name.starts_with(kNamePrefix)) full = std::string(kNamePrefix) + full;
  if (!IsSegmentName(full)) {
    return Status(Errc::kInvalid,
                  fmt::format("'{}' is not a kvcached segment name: names hold only letters, "
                              "digits, '_', '-' and '.' (see `kvctl list`)",
                              input));
  }
  return full;
}

}  // namespace kvcached::ledger
