#include "core/ledger/ledger_remove.h"

#include <fmt/core.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_segment.h"

namespace kvcached::ledger {

Result<RemoveOutcome> RemoveUnlessInUse(const std::string& name) {
  if (!IsSegmentName(name)) {
    return Status(Errc::kInvalid, fmt::format("'{}' is not a kvcached segment name", name));
  }
  const std::string path = SegmentPath(name);
  RemoveOutcome out;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    const int err = errno;
    return Status(err == ENOENT ? Errc::kNotFound : Errc::kInvalid,
                  err == ENOENT ? fmt::format("no segment {} (see `kvctl list`)", path)
                                : fmt::format("cannot read {}: {}", path, std::strerror(err)),
                  err);
  }
  if (!S_ISREG(st.st_mode)) {
    // Nothing can attach to it (engines open with O_NOFOLLOW and need a regular file).
    KVC_RETURN_IF_ERROR(Segment::Remove(name));
    out.removed = true;
    out.corrupt = fmt::format("{} was not a regular file", path);
    return out;
  }
  auto lock = SegmentLock::Exclusive(name);
  if (!lock.ok()) return lock.status();
  auto seg = Segment::Open(name, Segment::Access::kReadOnly);
  if (seg.ok()) {
    const SegmentSnapshot snap = TakeSnapshot(*seg.value());
    for (const auto& s : snap.slots) {
      if (!s.dead) out.live.push_back(s);
    }
    if (!out.live.empty()) return out;
  } else if (seg.status().code() == Errc::kInvalid && seg.status().driver_code() == 0) {
    out.corrupt = seg.status().message();  // fails validation: nobody can be using it
  } else {
    return seg.status();
  }
  if (!lock.value().StillNamed(name)) {
    return Status(Errc::kState, fmt::format("{} was replaced while it was being checked; run "
                                            "`kvctl delete` again",
                                            path));
  }
  KVC_RETURN_IF_ERROR(Segment::Remove(name));
  out.removed = true;
  return out;
}

}  // namespace kvcached::ledger
