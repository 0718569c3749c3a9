#include "core/ledger/ledger_segment.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <span>
#include <thread>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_process.h"
#include "core/ledger/ledger_trust.h"
#include "core/ledger/ledger_validate.h"

namespace kvcached::ledger {

struct Segment::Mapping {
  int fd = -1;
  void* addr = nullptr;
  std::size_t size = 0;
  struct stat st {};  // at open: the identity (device, inode) the path must keep naming

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  Mapping(Mapping&&) = delete;
  Mapping& operator=(Mapping&&) = delete;
  ~Mapping() {
    if (addr != nullptr) ::munmap(addr, size);
    if (fd >= 0) ::close(fd);
  }
};

namespace {

constexpr auto kInitWait = std::chrono::milliseconds(1000);
constexpr int kValidateTries = 3;

// O_NOFOLLOW: a symlink planted at the path is refused, not followed. O_NONBLOCK: a FIFO planted
// there cannot block the open (it is then refused as not a regular file).
int OpenPath(const std::string& path, int flags, mode_t mode = 0) {
  return ::open(path.c_str(), flags | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, mode);
}

Status OpenError(const std::string& path, int err) {
  if (err == ELOOP) {
    return {Errc::kInvalid,
            fmt::format("{} is a symbolic link, not a ledger segment: refused. Fix: remove it "
                        "(as its owner or root), or set KVCACHED_IPC_NAME to use another segment",
                        path),
            err};
  }
  return {err == ENOENT ? Errc::kNotFound : Errc::kInvalid, OpenErrorMessage(path, err), err};
}

// Takes a flock, waiting at most `wait` (never forever: the holder may be another user).
bool LockFd(int fd, int how, std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    if (::flock(fd, how | LOCK_NB) == 0) return true;
    if (errno != EWOULDBLOCK && errno != EINTR) return false;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Opens the file and maps up to the largest valid segment size; no validation of the bytes yet.
Result<std::unique_ptr<Segment::Mapping>> MapExisting(const std::string& name,
                                                      Segment::Access access,
                                                      const std::string& trusted_group,
                                                      std::chrono::milliseconds wait) {
  const std::string path = SegmentPath(name);
  const bool writable = access != Segment::Access::kReadOnly;
  auto mapping = std::make_unique<Segment::Mapping>();
  mapping->fd = OpenPath(path, writable ? O_RDWR : O_RDONLY);
  if (mapping->fd < 0) return OpenError(path, errno);
  struct stat& st = mapping->st;
  if (::fstat(mapping->fd, &st) != 0) return OpenError(path, errno);
  // Checked on the descriptor that is mapped below: what was checked is what is used.
  if (!S_ISREG(st.st_mode)) {
    return Status(Errc::kInvalid, *TrustProblem(st, TrustPolicyFor({}), path), EPERM);
  }
  if (access == Segment::Access::kReadWrite) {
    if (auto problem = TrustProblem(st, TrustPolicyFor(trusted_group), path)) {
      return Status(Errc::kInvalid, *problem, EPERM);
    }
  }
  // The creator sizes the file and then publishes the magic; give a creator that is still at it
  // a moment, but never wait forever for one that died, nor at all for a file that was last
  // changed long ago (a leftover: `kvctl list` must not pause a second on each).
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  if (now.tv_sec - st.st_ctim.tv_sec > 2) wait = std::chrono::milliseconds(0);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    if (::fstat(mapping->fd, &st) != 0) return OpenError(path, errno);
    if (static_cast<std::size_t>(st.st_size) >= sizeof(SegmentHeader)) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status(Errc::kInvalid,
                    SegmentProblem(path, fmt::format("it is {} bytes, smaller than the {}-byte "
                                                     "header (its creator died while creating it?)",
                                                     st.st_size, sizeof(SegmentHeader))));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Never map past the end of the file, nor more than the largest valid segment. (The file can
  // still shrink later: every access is guarded, see ledger_fault_guard.h.)
  std::size_t size =
      std::min<std::size_t>(static_cast<std::size_t>(st.st_size), SegmentBytes(kMaxSlotCount));
  size &= ~std::size_t{7};
  void* addr = ::mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
                      mapping->fd, 0);
  if (addr == MAP_FAILED) return OpenError(path, errno);
  mapping->addr = addr;
  mapping->size = size;
  const auto& header = *static_cast<const SegmentHeader*>(addr);
  std::uint64_t magic = 0;
  for (;;) {
    const bool ok = Guarded(addr, size, [&] { magic = LoadAcquire(header.magic); });
    if (!ok) {
      return Status(Errc::kInvalid, SegmentProblem(path, "it was truncated while being opened"));
    }
    if (magic != 0 || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return mapping;
}

}  // namespace

std::string OpenErrorMessage(const std::string& path, int err) {
  if (err == ENOENT) return fmt::format("no ledger segment {} (see `kvctl list`)", path);
  if (err == EACCES || err == EPERM) {
    struct stat st {};
    std::string owner = "another user";
    std::string mode;
    if (::lstat(path.c_str(), &st) == 0) {
      owner = OwnerText(st.st_uid);
      mode = fmt::format(", mode {:04o}", st.st_mode & 07777);
    }
    const std::string name = path.substr(path.rfind('/') + 1);
    return fmt::format(
        "permission denied opening {} (owned by {}{}). Engines that share a GPU must run as the "
        "same user, or all be started with KVCACHED_SHM_GROUP=<group> KVCACHED_SHM_MODE=0660; "
        "the owner (or root) can remove the old segment with `kvctl delete {}`; or set "
        "KVCACHED_IPC_NAME to use a segment of your own",
        path, owner, mode, name);
  }
  return fmt::format("cannot open {}: {}", path, std::strerror(err));
}

// ---- SegmentLock ----

SegmentLock::SegmentLock(SegmentLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), owns_fd_(std::exchange(other.owns_fd_, false)) {}

SegmentLock& SegmentLock::operator=(SegmentLock&& other) noexcept {
  if (this != &other) {
    this->~SegmentLock();
    fd_ = std::exchange(other.fd_, -1);
    owns_fd_ = std::exchange(other.owns_fd_, false);
  }
  return *this;
}

SegmentLock::~SegmentLock() {
  if (fd_ < 0) return;
  ::flock(fd_, LOCK_UN);
  if (owns_fd_) ::close(fd_);
  fd_ = -1;
}

Result<SegmentLock> SegmentLock::Exclusive(const std::string& name,
                                           std::chrono::milliseconds wait) {
  const std::string path = SegmentPath(name);
  SegmentLock lock;
  lock.fd_ = OpenPath(path, O_RDONLY);
  if (lock.fd_ < 0) return OpenError(path, errno);
  lock.owns_fd_ = true;
  if (!LockFd(lock.fd_, LOCK_EX, wait)) {
    return Status(Errc::kState,
                  fmt::format("{} is busy: an engine is attaching to it or another kvctl is "
                              "deleting it; try again",
                              path));
  }
  return lock;
}

bool SegmentLock::StillNamed(const std::string& name) const {
  struct stat held {};
  struct stat named {};
  if (fd_ < 0 || ::fstat(fd_, &held) != 0 || held.st_nlink == 0) return false;
  if (::lstat(SegmentPath(name).c_str(), &named) != 0) return false;
  return held.st_dev == named.st_dev && held.st_ino == named.st_ino;
}

// ---- Segment ----

Segment::Segment(std::string name, std::unique_ptr<Mapping> mapping, bool writable)
    : name_(std::move(name)), mapping_(std::move(mapping)), writable_(writable) {
  InstallFaultGuard();
}

Segment::~Segment() = default;

std::string Segment::path() const {
  return SegmentPath(name_);
}

const void* Segment::base() const {
  return mapping_->addr;
}
std::size_t Segment::mapped_size() const {
  return mapping_->size;
}

Status Segment::Adopt() {
  Status last;
  for (int attempt = 0; attempt < kValidateTries; ++attempt) {
    // Validation reads a copy: a slot changing owner between two reads of a live segment can
    // look inconsistent for an instant, so a failure is confirmed on fresh copies.
    const std::vector<std::byte> bytes = Copy();
    auto summary = ValidateSegment(bytes, path());
    if (summary.ok()) {
      slot_count_ = summary.value().slot_count;
      budget_ = summary.value().budget;
      gpu_total_ = summary.value().gpu_total;
      gpu_uuid_ = summary.value().gpu_uuid;
      return Status::Ok();
    }
    last = summary.status();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return last;
}

Result<std::unique_ptr<Segment>> Segment::Open(const std::string& name, Access access,
                                               const std::string& trusted_group) {
  if (!IsSegmentName(name)) {
    return Status(Errc::kInvalid, fmt::format("'{}' is not a kvcached segment name", name));
  }
  auto mapping = MapExisting(name, access, trusted_group, kInitWait);
  if (!mapping.ok()) return mapping.status();
  std::unique_ptr<Segment> seg(
      new Segment(name, std::move(mapping).value(), access != Access::kReadOnly));
  KVC_RETURN_IF_ERROR(seg->Adopt());
  return seg;
}

Result<std::unique_ptr<Segment>> Segment::OpenOrCreate(const std::string& name,
                                                       const CreateParams& params, bool* created) {
  if (created != nullptr) *created = false;
  if (!IsSegmentName(name)) {
    return Status(Errc::kInvalid, fmt::format("'{}' is not a kvcached segment name", name));
  }
  const std::string path = SegmentPath(name);
  if (params.gpu_total == 0 || params.budget == 0 || params.budget > params.gpu_total ||
      params.slot_count == 0 || params.slot_count > kMaxSlotCount) {
    return Status(Errc::kInvalid,
                  fmt::format("cannot create {}: budget {} must be within 1..GPU total {}", path,
                              params.budget, params.gpu_total));
  }
  // Open and create race with other processes starting at the same time: whoever wins O_EXCL
  // initialises; everybody else opens. A few rounds settle any interleaving.
  for (int round = 0; round < 8; ++round) {
    auto opened = Open(name, Access::kReadWrite, params.group);
    if (opened.ok() || opened.status().code() != Errc::kNotFound) return opened;

    auto mapping = std::make_unique<Mapping>();
    mapping->fd = OpenPath(path, O_RDWR | O_CREAT | O_EXCL, params.mode & 0777);
    if (mapping->fd < 0) {
      const int err = errno;
      if (err == EEXIST) continue;  // lost the race: open the winner's segment
      return OpenError(path, err);
    }
    // From here on the half-made segment is ours to remove if anything fails.
    auto fail = [&](std::string message) -> Status {
      ::unlink(path.c_str());
      return {Errc::kInvalid, std::move(message)};
    };
    const int fd = mapping->fd;
    if (::fchmod(fd, params.mode) != 0) {
      return fail(
          fmt::format("cannot set mode {:04o} on {}: {}", params.mode, path, std::strerror(errno)));
    }
    if (!params.group.empty()) {
      auto gid = GroupId(params.group);
      if (!gid) {
        return fail(
            fmt::format("KVCACHED_SHM_GROUP={}: no such group (create it, or unset the "
                        "variable to keep the ledger owner-only)",
                        params.group));
      }
      if (::fchown(fd, static_cast<uid_t>(-1), *gid) != 0) {
        return fail(
            fmt::format("cannot give {} to group {} (KVCACHED_SHM_GROUP): {} (the "
                        "creating user must be a member of that group)",
                        path, params.group, std::strerror(errno)));
      }
    }
    const std::size_t size = SegmentBytes(params.slot_count);
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      return fail(
          fmt::format("cannot size {} to {} bytes: {} (is /dev/shm full? see `kvctl "
                      "doctor`)",
                      path, size, std::strerror(errno)));
    }
    void* addr = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) {
      return fail(fmt::format("cannot map {}: {}", path, std::strerror(errno)));
    }
    mapping->addr = addr;
    mapping->size = size;
    ::fstat(fd, &mapping->st);
    auto& h = *static_cast<SegmentHeader*>(addr);
    // tmpfs pages start zeroed, so every slot is free; only the header needs writing. Nobody
    // reads it before the magic is published.
    const bool written = Guarded(addr, size, [&] {
      h.version = kLayoutVersion;
      h.header_size = sizeof(SegmentHeader);
      h.slot_count = params.slot_count;
      h.slot_size = sizeof(LedgerSlot);
      h.gpu_total = params.gpu_total;
      h.budget = params.budget;
      h.created_ns = RealtimeNs();
      h.creator_pid = static_cast<std::uint32_t>(::getpid());
      const std::size_t uuid_len = std::min(params.gpu_uuid.size(), kUuidBytes - 1);
      std::memcpy(h.gpu_uuid.data(), params.gpu_uuid.data(), uuid_len);
      Atomic(h.magic).store(kMagic, std::memory_order_release);
    });
    if (!written) return fail(SegmentProblem(path, "it was truncated while being created"));

    std::unique_ptr<Segment> seg(new Segment(name, std::move(mapping), true));
    Status adopted = seg->Adopt();
    if (!adopted.ok()) return fail(adopted.message());
    if (created != nullptr) *created = true;
    return seg;
  }
  return Status(Errc::kInvalid,
                fmt::format("cannot open or create {}: it keeps appearing and disappearing "
                            "(another process is deleting it?)",
                            path));
}

Status Segment::Remove(const std::string& name) {
  if (!IsSegmentName(name)) {
    return {Errc::kInvalid, fmt::format("'{}' is not a kvcached segment name", name)};
  }
  const std::string path = SegmentPath(name);
  if (::unlink(path.c_str()) == 0) return Status::Ok();
  const int err = errno;
  if (err == EACCES || err == EPERM) {
    struct stat st {};
    std::string owner = "another user";
    if (::lstat(path.c_str(), &st) == 0) owner = OwnerText(st.st_uid);
    return {Errc::kInvalid,
            fmt::format("permission denied deleting {}: it belongs to {}; run `kvctl delete {}` "
                        "as that user or as root",
                        path, owner, name),
            err};
  }
  if (err == ENOENT) return {Errc::kNotFound, OpenErrorMessage(path, err), err};
  return {Errc::kInvalid, fmt::format("cannot delete {}: {}", path, std::strerror(err)), err};
}

Result<SegmentLock> Segment::LockForAttach(std::chrono::milliseconds wait) {
  SegmentLock lock;
  lock.fd_ = mapping_->fd;  // borrowed: the segment keeps its descriptor
  if (!LockFd(lock.fd_, LOCK_SH, wait)) {
    lock.fd_ = -1;
    return Status(Errc::kState, fmt::format("{} stayed locked for {} ms (a `kvctl delete` that "
                                            "hangs?); not attaching to it",
                                            path(), wait.count()));
  }
  struct stat st {};
  if (::fstat(mapping_->fd, &st) != 0 || st.st_nlink == 0) {
    return Status(Errc::kNotFound,
                  fmt::format("{} was deleted while this process attached to it", path()));
  }
  return lock;
}

std::optional<std::string> Segment::Health() const {
  struct stat st {};
  if (::fstat(mapping_->fd, &st) != 0) {
    return fmt::format("it cannot be checked: {}", std::strerror(errno));
  }
  if (static_cast<std::size_t>(st.st_size) < mapping_->size) {
    return fmt::format("it was truncated to {} bytes while in use (it needs {})", st.st_size,
                       mapping_->size);
  }
  SegmentHeader h{};
  if (!Guard([&] { CopyWords(&h, base(), sizeof(h)); })) {
    return std::string("it was truncated while in use");
  }
  if (h.magic != kMagic || h.version != kLayoutVersion || h.slot_count != slot_count_ ||
      h.budget != budget_ || h.gpu_total != gpu_total_ || h.header_size != sizeof(SegmentHeader) ||
      h.slot_size != sizeof(LedgerSlot)) {
    return std::string(
        "its header was overwritten while in use (it is corrupt now: magic, version, budget or "
        "geometry changed)");
  }
  return std::nullopt;
}

bool Segment::Unlinked() const {
  struct stat held {};
  struct stat named {};
  if (::fstat(mapping_->fd, &held) != 0 || held.st_nlink == 0) return true;
  if (::lstat(path().c_str(), &named) != 0) return true;
  return held.st_dev != named.st_dev || held.st_ino != named.st_ino;
}

SegmentHeader& Segment::header() {
  return *static_cast<SegmentHeader*>(mapping_->addr);
}
const SegmentHeader& Segment::header() const {
  return *static_cast<const SegmentHeader*>(mapping_->addr);
}
LedgerSlot& Segment::slot(std::uint32_t index) {
  auto* base = static_cast<std::byte*>(mapping_->addr) + sizeof(SegmentHeader);
  return reinterpret_cast<LedgerSlot*>(base)[index];
}
const LedgerSlot& Segment::slot(std::uint32_t index) const {
  const auto* base = static_cast<const std::byte*>(mapping_->addr) + sizeof(SegmentHeader);
  return reinterpret_cast<const LedgerSlot*>(base)[index];
}

std::vector<std::byte> Segment::Copy() const {
  const std::size_t size = mapping_->size & ~std::size_t{7};
  std::vector<std::byte> out(size);
  std::byte* dst = out.data();
  if (!Guard([&] { CopyWords(dst, mapping_->addr, size); })) {
    std::fill(out.begin(), out.end(), std::byte{0});
  }
  return out;
}

}  // namespace kvcached::ledger
