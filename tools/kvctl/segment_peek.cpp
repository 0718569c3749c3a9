#include "tools/kvctl/segment_peek.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <unistd.h>

namespace kvctl {

namespace ledger = kvcached::ledger;

HeaderPeek PeekHeader(const std::string& path) {
  HeaderPeek peek;
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return peek;
  peek.opened = true;
  if (::fstat(fd, &peek.st) == 0 && S_ISREG(peek.st.st_mode)) {
    peek.regular = true;
    ledger::SegmentHeader h{};
    if (static_cast<std::size_t>(peek.st.st_size) >= sizeof(h) &&
        ::pread(fd, &h, sizeof(h), 0) == static_cast<ssize_t>(sizeof(h)) && h.magic != 0) {
      peek.finished = true;
      peek.header = h;
    }
  }
  ::close(fd);
  return peek;
}

std::optional<std::uint32_t> OtherLayoutVersion(const HeaderPeek& peek) {
  if (!peek.header || peek.header->magic != ledger::kMagic) return std::nullopt;
  if (peek.header->version == ledger::kLayoutVersion) return std::nullopt;
  return peek.header->version;
}

std::string OtherVersionMessage(const std::string& path, const std::string& name,
                                std::uint32_t version) {
  return fmt::format(
      "{} is of another kvcached version (layout {}; this kvctl reads {}): its engines and "
      "engines of this version cannot share it. Fix: inspect it with the kvctl of its version; "
      "to move its GPU to this version, stop its engines, `kvctl delete {}`, and restart them "
      "with this version (or upgrade this kvctl if the engines are the newer ones)",
      path, version, ledger::kLayoutVersion, name);
}

}  // namespace kvctl
