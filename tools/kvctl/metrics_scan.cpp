#include "tools/kvctl/metrics_scan.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <ctime>

#include "core/ledger/ledger_layout.h"
#include "core/ledger/ledger_name.h"

namespace kvctl {

std::optional<SegmentEntry> UnfinishedSegment(const std::string& name) {
  const std::string path = kvcached::ledger::SegmentPath(name);
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return std::nullopt;  // Inspect reports why
  struct stat st {};
  std::uint64_t magic = 0;
  bool finished = true;
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    finished = static_cast<std::size_t>(st.st_size) >= sizeof(kvcached::ledger::SegmentHeader) &&
               ::pread(fd, &magic, sizeof(magic), 0) == static_cast<ssize_t>(sizeof(magic)) &&
               magic != 0;
  }
  ::close(fd);
  if (finished) return std::nullopt;
  SegmentEntry entry;  // empty name: leave it out for now
  if (std::time(nullptr) - st.st_mtime <= kUnfinishedGrace.count()) return entry;
  entry.name = name;
  entry.path = path;
  entry.status = SegmentStatus::kCorrupt;
  entry.uid = st.st_uid;
  entry.gid = st.st_gid;
  entry.mode = st.st_mode & 07777;
  entry.error = fmt::format(
      "{} was never initialised ({} bytes, no header): its creator died while creating it; "
      "remove it with `kvctl delete {}`",
      path, st.st_size, name);
  return entry;
}

std::vector<SegmentEntry> ScanForMetrics() {
  std::vector<SegmentEntry> out;
  for (const auto& name : SegmentNames()) {
    std::optional<SegmentEntry> unfinished = UnfinishedSegment(name);
    if (!unfinished) {
      out.push_back(Inspect(name));
    } else if (!unfinished->name.empty()) {
      out.push_back(std::move(*unfinished));
    }
  }
  return out;
}

}  // namespace kvctl
