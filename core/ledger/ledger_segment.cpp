#include "core/ledger/ledger_segment.h"

#include <fcntl.h>
#include <fmt/core.h>
#include <grp.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <span>
#include <thread>

#include "core/ledger/ledger_atomics.h"
#include "core/ledger/ledger_name.h"
#include "core/ledger/ledger_process.h"
#include "core/ledger/ledger_validate.h"

namespace bip = boost::interprocess;

namespace kvcached::ledger {

struct Segment::Mapping {
  bip::shared_memory_object shm;
  bip::mapped_region region;
};

namespace {

constexpr auto kInitWait = std::chrono::milliseconds(1000);
constexpr int kValidateTries = 3;

int NativeError(const bip::interprocess_exception& e) {
  const int err = e.get_native_error();
  return err != 0 ? err : EIO;
}

int MappingFd(const bip::shared_memory_object& shm) {
  return shm.get_mapping_handle().handle;
}

std::string UserName(uid_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  char buf[1024];
  if (::getpwuid_r(uid, &pw, buf, sizeof(buf), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return std::to_string(uid);
}

Result<gid_t> GroupId(const std::string& group) {
  struct group gr {};
  struct group* found = nullptr;
  char buf[4096];
  if (::getgrnam_r(group.c_str(), &gr, buf, sizeof(buf), &found) == 0 && found != nullptr) {
    return found->gr_gid;
  }
  return Status(Errc::kInvalid,
                fmt::format("KVCACHED_SHM_GROUP={}: no such group (create it, or unset the "
                            "variable to keep the ledger owner-only)",
                            group));
}

// Opens the shm object and maps up to the largest valid segment size; no validation yet.
Result<std::unique_ptr<Segment::Mapping>> MapExisting(const std::string& name, bool writable,
                                                      std::chrono::milliseconds wait);

}  // namespace

std::string OpenErrorMessage(const std::string& path, int err) {
  if (err == ENOENT) return fmt::format("no ledger segment {} (see `kvctl list`)", path);
  if (err == EACCES || err == EPERM) {
    struct stat st {};
    std::string owner = "another user";
    std::string mode;
    if (::stat(path.c_str(), &st) == 0) {
      owner = fmt::format("user {} (uid {})", UserName(st.st_uid), st.st_uid);
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

namespace {

Result<std::unique_ptr<Segment::Mapping>> MapExisting(const std::string& name, bool writable,
                                                      std::chrono::milliseconds wait) {
  const std::string path = SegmentPath(name);
  auto mapping = std::make_unique<Segment::Mapping>();
  const bip::mode_t mode = writable ? bip::read_write : bip::read_only;
  try {
    mapping->shm = bip::shared_memory_object(bip::open_only, name.c_str(), mode);
  } catch (const bip::interprocess_exception& e) {
    const int err = NativeError(e);
    return Status(err == ENOENT ? Errc::kNotFound : Errc::kInvalid, OpenErrorMessage(path, err),
                  err);
  }
  struct stat st {};
  if (writable && ::fstat(MappingFd(mapping->shm), &st) == 0 && (st.st_mode & S_IWOTH) != 0 &&
      st.st_uid != ::geteuid()) {
    // Anyone could have created it, and anyone can rewrite it: budget, limits, usage.
    return Status(
        Errc::kInvalid,
        SegmentProblem(path, fmt::format("it is world-writable (mode {:04o}) and owned "
                                         "by {} (uid {}), so any user could change it",
                                         st.st_mode & 07777, UserName(st.st_uid), st.st_uid)));
  }
  // The creator truncates and then publishes the magic; give a creator that is still at it a
  // moment, but never wait forever for one that died.
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    if (::fstat(MappingFd(mapping->shm), &st) != 0) {
      return Status(Errc::kInvalid, OpenErrorMessage(path, errno), errno);
    }
    if (static_cast<std::size_t>(st.st_size) >= sizeof(SegmentHeader)) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status(Errc::kInvalid,
                    SegmentProblem(path, fmt::format("it is {} bytes, smaller than the {}-byte "
                                                     "header (its creator died while creating it?)",
                                                     st.st_size, sizeof(SegmentHeader))));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Never map past the end of the file (SIGBUS), nor more than the largest valid segment.
  std::size_t size =
      std::min<std::size_t>(static_cast<std::size_t>(st.st_size), SegmentBytes(kMaxSlotCount));
  size &= ~std::size_t{7};
  try {
    mapping->region = bip::mapped_region(mapping->shm, mode, 0, size);
  } catch (const bip::interprocess_exception& e) {
    const int err = NativeError(e);
    return Status(Errc::kInvalid, OpenErrorMessage(path, err), err);
  }
  const auto& header = *static_cast<const SegmentHeader*>(mapping->region.get_address());
  while (LoadAcquire(header.magic) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return mapping;
}

}  // namespace

Segment::Segment(std::string name, std::unique_ptr<Mapping> mapping, bool writable)
    : name_(std::move(name)), mapping_(std::move(mapping)), writable_(writable) {}

Segment::~Segment() = default;

std::string Segment::path() const {
  return SegmentPath(name_);
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

Result<std::unique_ptr<Segment>> Segment::Open(const std::string& name, Access access) {
  if (!IsSegmentName(name)) {
    return Status(Errc::kInvalid, fmt::format("'{}' is not a kvcached segment name", name));
  }
  const bool writable = access == Access::kReadWrite;
  auto mapping = MapExisting(name, writable, kInitWait);
  if (!mapping.ok()) return mapping.status();
  std::unique_ptr<Segment> seg(new Segment(name, std::move(mapping).value(), writable));
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
    auto opened = Open(name, Access::kReadWrite);
    if (opened.ok() || opened.status().code() != Errc::kNotFound) return opened;

    auto mapping = std::make_unique<Mapping>();
    try {
      mapping->shm = bip::shared_memory_object(bip::create_only, name.c_str(), bip::read_write,
                                               bip::permissions(static_cast<int>(params.mode)));
    } catch (const bip::interprocess_exception& e) {
      const int err = NativeError(e);
      if (err == EEXIST) continue;  // lost the race: open the winner's segment
      return Status(Errc::kInvalid, OpenErrorMessage(path, err), err);
    }
    // From here on the half-made segment is ours to remove if anything fails.
    auto fail = [&](std::string message) -> Status {
      ::shm_unlink(("/" + name).c_str());
      return {Errc::kInvalid, std::move(message)};
    };
    const int fd = MappingFd(mapping->shm);
    if (::fchmod(fd, params.mode) != 0) {
      return fail(
          fmt::format("cannot set mode {:04o} on {}: {}", params.mode, path, std::strerror(errno)));
    }
    if (!params.group.empty()) {
      auto gid = GroupId(params.group);
      if (!gid.ok()) return fail(gid.status().message());
      if (::fchown(fd, static_cast<uid_t>(-1), gid.value()) != 0) {
        return fail(
            fmt::format("cannot give {} to group {} (KVCACHED_SHM_GROUP): {} (the "
                        "creating user must be a member of that group)",
                        path, params.group, std::strerror(errno)));
      }
    }
    const std::size_t size = SegmentBytes(params.slot_count);
    try {
      mapping->shm.truncate(static_cast<bip::offset_t>(size));
      mapping->region = bip::mapped_region(mapping->shm, bip::read_write, 0, size);
    } catch (const bip::interprocess_exception& e) {
      return fail(
          fmt::format("cannot size {} to {} bytes: {} (is /dev/shm full? see `kvctl "
                      "doctor`)",
                      path, size, std::strerror(NativeError(e))));
    }
    auto& h = *static_cast<SegmentHeader*>(mapping->region.get_address());
    // tmpfs pages start zeroed, so every slot is free; only the header needs writing. Nobody
    // reads it before the magic is published.
    h.version = kLayoutVersion;
    h.header_size = sizeof(SegmentHeader);
    h.slot_count = params.slot_count;
    h.slot_size = sizeof(LedgerSlot);
    h.gpu_total = params.gpu_total;
    h.budget = params.budget;
    h.created_ns = RealtimeNs();
    h.creator_pid = static_cast<std::uint32_t>(::getpid());
    const std::size_t uuid_len = std::min(params.gpu_uuid.size(), kUuidBytes - 1);
    std::memcpy(h.gpu_uuid, params.gpu_uuid.data(), uuid_len);
    Atomic(h.magic).store(kMagic, std::memory_order_release);

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
  if (::shm_unlink(("/" + name).c_str()) == 0) return Status::Ok();
  const int err = errno;
  if (err == EACCES || err == EPERM) {
    struct stat st {};
    std::string owner = "another user";
    if (::stat(path.c_str(), &st) == 0) {
      owner = fmt::format("user {} (uid {})", UserName(st.st_uid), st.st_uid);
    }
    return {Errc::kInvalid,
            fmt::format("permission denied deleting {}: it belongs to {}; run `kvctl delete {}` "
                        "as that user or as root",
                        path, owner, name),
            err};
  }
  if (err == ENOENT) return {Errc::kNotFound, OpenErrorMessage(path, err), err};
  return {Errc::kInvalid, fmt::format("cannot delete {}: {}", path, std::strerror(err)), err};
}

SegmentHeader& Segment::header() {
  return *static_cast<SegmentHeader*>(mapping_->region.get_address());
}
const SegmentHeader& Segment::header() const {
  return *static_cast<const SegmentHeader*>(mapping_->region.get_address());
}
LedgerSlot& Segment::slot(std::uint32_t index) {
  auto* base = static_cast<std::byte*>(mapping_->region.get_address()) + sizeof(SegmentHeader);
  return reinterpret_cast<LedgerSlot*>(base)[index];
}
const LedgerSlot& Segment::slot(std::uint32_t index) const {
  const auto* base =
      static_cast<const std::byte*>(mapping_->region.get_address()) + sizeof(SegmentHeader);
  return reinterpret_cast<const LedgerSlot*>(base)[index];
}

std::vector<std::byte> Segment::Copy() const {
  const std::size_t size = mapping_->region.get_size() & ~std::size_t{7};
  std::vector<std::byte> out(size);
  CopyWords(out.data(), mapping_->region.get_address(), size);
  return out;
}

}  // namespace kvcached::ledger
