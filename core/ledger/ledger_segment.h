// Segment: one mapped ledger (/dev/shm/kvcached_*), created or opened with O_NOFOLLOW, checked
// with fstat on the descriptor it maps (regular file; for engines also the trust model of
// ledger_trust.h) and validated on every open. The geometry (slot count, budget, GPU total) is
// read once from a validated copy and never re-read, so that a later scribble on the shared
// bytes cannot make this process index out of bounds. Every access to the mapping by the ledger
// runs under Guard() (ledger_fault_guard.h), so a segment truncated under us cannot SIGBUS.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/common/status.h"
#include "core/ledger/ledger_fault_guard.h"
#include "core/ledger/ledger_layout.h"

namespace kvcached::ledger {

struct CreateParams {
  std::uint64_t gpu_total = 0;
  std::uint64_t budget = 0;
  std::string gpu_uuid;
  std::uint32_t slot_count = kDefaultSlotCount;
  std::uint32_t mode = 0600;  // applied with fchmod, so the umask cannot widen or narrow it
  std::string group;          // when set, the segment's group (fchown), and trusted on open
};

// A kernel flock on a segment file. `kvctl delete` holds it exclusively across its "is anybody
// attached?" check and the unlink; an engine holds it shared while it claims its slot
// (LedgerBudget::Attach), so the two exclude each other. The kernel drops it when its holder
// dies, so no process can leave it held.
class SegmentLock {
 public:
  SegmentLock() = default;
  SegmentLock(SegmentLock&& other) noexcept;
  SegmentLock& operator=(SegmentLock&& other) noexcept;
  SegmentLock(const SegmentLock&) = delete;
  SegmentLock& operator=(const SegmentLock&) = delete;
  ~SegmentLock();

  // Opens /dev/shm/<name> (read-only is enough for a flock) and locks it exclusively, waiting at
  // most `wait`.
  static Result<SegmentLock> Exclusive(const std::string& name,
                                       std::chrono::milliseconds wait = std::chrono::seconds(2));
  // True while /dev/shm/<name> is still the file this lock holds (not unlinked or replaced).
  [[nodiscard]] bool StillNamed(const std::string& name) const;

 private:
  friend class Segment;
  int fd_ = -1;
  bool owns_fd_ = false;
};

class Segment {
 public:
  enum class Access {
    kReadOnly,   // kvctl list/watch: any readable regular file
    kReadWrite,  // an engine: only a segment it trusts (ledger_trust.h)
    kOperator,   // kvctl limit: read-write wherever the kernel lets this user write
  };
  struct Mapping;  // the descriptor and the mapping (ledger_segment.cpp)

  // Opens `name` as an engine (trusting params.group), creating it from `params` when it does
  // not exist. `created` tells which.
  static Result<std::unique_ptr<Segment>> OpenOrCreate(const std::string& name,
                                                       const CreateParams& params,
                                                       bool* created = nullptr);
  // Opens an existing segment; waits (bounded, 1 s) for a creator that is still initialising it.
  // `trusted_group` (KVCACHED_SHM_GROUP) matters for kReadWrite only.
  static Result<std::unique_ptr<Segment>> Open(const std::string& name, Access access,
                                               const std::string& trusted_group = {});
  // Unlinks /dev/shm/<name> (processes that have it mapped keep their mapping).
  static Status Remove(const std::string& name);

  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  Segment(Segment&&) = delete;
  Segment& operator=(Segment&&) = delete;
  ~Segment();

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::string path() const;
  [[nodiscard]] std::uint32_t slot_count() const { return slot_count_; }
  [[nodiscard]] std::uint64_t budget() const { return budget_; }
  [[nodiscard]] std::uint64_t gpu_total() const { return gpu_total_; }
  [[nodiscard]] const std::string& gpu_uuid() const { return gpu_uuid_; }
  [[nodiscard]] bool writable() const { return writable_; }

  // Live words (use the accessors of ledger_atomics.h). Writable only when opened read-write.
  SegmentHeader& header();
  LedgerSlot& slot(std::uint32_t index);
  [[nodiscard]] const SegmentHeader& header() const;
  [[nodiscard]] const LedgerSlot& slot(std::uint32_t index) const;

  // A word-by-word copy of the header and the slots (for display and validation). All zeros
  // when the file was truncated under the mapping.
  [[nodiscard]] std::vector<std::byte> Copy() const;

  // Runs fn() with the fault guard over this mapping: false when the file was truncated under
  // it and fn was cut short (fn may only hold trivially destructible objects).
  template <class F>
  [[nodiscard]] bool Guard(F&& fn) const {
    return Guarded(base(), mapped_size(), std::forward<F>(fn));
  }
  // Why this mapping can no longer be trusted: the file shrank below it, or its header words
  // (fixed at creation) changed. Empty when it is fine. One fstat and a few loads (heartbeat).
  [[nodiscard]] std::optional<std::string> Health() const;
  // True once /dev/shm/<name> no longer names the file this process has mapped (deleted, or
  // deleted and created again): the mapping keeps working, but newcomers use another budget.
  [[nodiscard]] bool Unlinked() const;
  // Locks the file shared for an attach (see SegmentLock). kNotFound when the segment was
  // deleted before the lock was taken (the caller opens the name again).
  Result<SegmentLock> LockForAttach(std::chrono::milliseconds wait = std::chrono::seconds(2));

 private:
  [[nodiscard]] const void* base() const;
  [[nodiscard]] std::size_t mapped_size() const;
  Segment(std::string name, std::unique_ptr<Mapping> mapping, bool writable);
  Status Adopt();  // validates and reads the geometry

  std::string name_;
  std::unique_ptr<Mapping> mapping_;
  bool writable_ = false;
  std::uint32_t slot_count_ = 0;
  std::uint64_t budget_ = 0;
  std::uint64_t gpu_total_ = 0;
  std::string gpu_uuid_;
};

// Why opening `path` failed with errno `err`, with the fix (permission denied names the owner and
// KVCACHED_SHM_GROUP / KVCACHED_SHM_MODE).
std::string OpenErrorMessage(const std::string& path, int err);

}  // namespace kvcached::ledger
